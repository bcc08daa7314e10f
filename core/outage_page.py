"""The 503 of a staff page (the admin, the console) that an outage kept from being served: a page
for the operator's browser, the service's JSON error for a script (the console's refresh)."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.cache import patch_vary_headers

from core.errors import error_body

_PAGE, _JSON = "text/html", "application/json"


def outage_answer(request: HttpRequest, *, code: str, message: str, retry_after: int) -> HttpResponse:
    """503 saying `message`, with Retry-After: a page (styled by the admin's stylesheet) to a
    client that asks for HTML before JSON, the JSON error to any other.

    Told apart by what the request accepts rather than by its path: the console's page and the
    fragment its script refreshes it with share one path (/console/), and a browser's navigation
    and form posts list text/html first, which fetch() (the console's script), requests and curl
    do not (`*/*`, JSON's here), nor the admin's autocomplete (JSON first). The page shows only
    the message: a browser showed the JSON raw."""
    if request.get_preferred_type([_JSON, _PAGE]) == _PAGE:
        body = render_to_string("outage.html", {"code": code, "message": message, "retry_after": retry_after})
        response: HttpResponse = HttpResponse(body, status=503)
    else:
        response = JsonResponse(error_body(code, message), status=503)
    response["Retry-After"] = str(retry_after)
    patch_vary_headers(response, ["Accept"])
    return response
