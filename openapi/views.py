"""The spec's view: drf-spectacular's, its answer made once per process and format."""
from __future__ import annotations

import threading
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework.request import Request

# Accepted media type -> (body, Content-Type, Content-Disposition) of the answer.
_answers: dict[str, tuple[bytes, str, str]] = {}
_making = threading.Lock()


class SchemaApi(SpectacularAPIView):
    """`GET /api/schema/`, open to anyone (the docs pages read it). The document changes only with
    the code, so each process generates and renders it once per format: made per request it took
    55-150 ms of CPU (30-55 generating it, 25-100 writing the YAML) in its process's turn, where
    a request without a key is answered in about 1 ms, and requests without a key are not
    rate-limited: anyone asking for it in a loop held every other request of the process behind
    it. (`version` and `lang` change nothing here: no API versions, no translations.)"""

    @extend_schema(exclude=True)  # as drf-spectacular's own get (SERVE_INCLUDE_SCHEMA off)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        media_type = request.accepted_media_type
        answer = _answers.get(media_type)
        if answer is None:
            with _making:  # made by one request; those arriving meanwhile take it
                answer = _answers.get(media_type)
                if answer is None:
                    answer = _answers[media_type] = self._made(request, *args, **kwargs)
        body, content_type, disposition = answer
        return HttpResponse(body, content_type=content_type, headers={"Content-Disposition": disposition})

    def _made(self, request: Request, *args: Any, **kwargs: Any) -> tuple[bytes, str, str]:
        response = super().get(request, *args, **kwargs)
        response.accepted_renderer = request.accepted_renderer
        response.accepted_media_type = request.accepted_media_type
        response.renderer_context = self.get_renderer_context()
        response.render()
        return response.content, response["Content-Type"], response["Content-Disposition"]
