import pytest
from tests.conftest import Api
S = "api.tasks.save_task_result_test_task"
CASES = [
    ("post", "/api/jobs/", {"job_name": S, "run_at": "0001-01-01T00:00:00+10:00"}, {}),
    ("post", "/api/jobs/", {"job_name": S, "run_at": "9999-12-31T23:59:59-10:00"}, {}),
    ("post", "/api/jobs/", {"job_name": S, "run_at": "9999-12-31T23:59:59Z"}, {}),
    ("post", "/api/jobs/", {"job_name": S, "deadline": "9999-12-31T23:59:59Z"}, {}),
    ("post", "/api/jobs/", {"job_name": S, "deadline": "9999-12-31T23:59:59-10:00"}, {}),
    ("post", "/api/jobs/", {"job_name": S, "deadline": "0001-01-01T00:00:00+10:00"}, {}),
    ("post", "/api/jobs/", {"job_name": S, "deadline": "0001-01-01T00:00:00Z"}, {}),
    ("post", "/api/jobs/", {"job_name": S, "run_at": "0001-01-01T00:00:00Z"}, {}),
    ("post", "/api/jobs/", {"job_name": S, "run_at": "2026-01-01T00:00:00+23:59"}, {}),
    ("post", "/api/jobs/", {"job_name": S}, {"Cancel-After": "999999999h"}),
    ("post", "/api/jobs/", {"job_name": S}, {"Cancel-After": "999999999"}),
    ("post", "/api/jobs/", {"job_name": S}, {"Cancel-After": "0.000001"}),
    ("post", "/api/jobs/batch/", {"jobs": [{"job_name": S}]}, {"Cancel-After": "999999999h"}),
    ("post", "/api/jobs/batch/", {"jobs": [{"job_name": S, "deadline": "9999-12-31T23:59:59Z"}]}, {}),
    ("post", "/api/jobs/", {"job_name": "api.tasks.long_running_task", "payload": {"duration": 1}, "retry": {"max_attempts": 10**30}}, {}),
    ("post", "/api/jobs/", {"job_name": "api.tasks.long_running_task", "payload": {"duration": 1}, "retry": {"max_attempts": 2, "backoff_seconds": 1e308}}, {}),
    ("post", "/api/jobs/", {"job_name": S, "metadata": {"k": "v\u0000"}}, {}),
    ("get", "/api/jobs/?metadata[k]=%F0%9F%98%80", None, {}),
    ("get", "/api/jobs/?metadata[%E2%80%8B]=x&metadata[k]=", None, {}),
]
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_probe(make_api, case):
    api = make_api()
    method, path, body, headers = case
    r = api.post(path, json=body, headers=headers) if method == "post" else api.get(path, headers=headers)
    print("PROBE", r.status_code, path, body, headers, r.text[:250])
    assert r.status_code < 500
