"""The spec's view: drf-spectacular's, its answer made once per process and format."""
from __future__ import annotations

import threading
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

# The renderer the client's Accept (or ?format=) chose -> (body, Content-Type, Content-Disposition)
# of the answer. By renderer, not by the accepted media type: that carries whatever parameters the
# client's Accept gave it (`; x=1`, `; x=2`, ...), one more document made and kept for each.
_answers: dict[type[BaseRenderer], tuple[bytes, str, str]] = {}
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
        renderer = type(request.accepted_renderer)
        answer = _answers.get(renderer)
        if answer is None:
            with _making:  # made by one request; those arriving meanwhile take it
                answer = _answers.get(renderer)
                if answer is None:
                    answer = _answers[renderer] = self._made(request, *args, **kwargs)
        body, content_type, disposition = answer
        return HttpResponse(body, content_type=content_type, headers={"Content-Disposition": disposition})

    def _made(self, request: Request, *args: Any, **kwargs: Any) -> tuple[bytes, str, str]:
        response = super().get(request, *args, **kwargs)
        renderer = request.accepted_renderer
        response.accepted_renderer = renderer
        response.accepted_media_type = renderer.media_type  # as any client of this renderer gets it
        response.renderer_context = self.get_renderer_context()
        response.render()
        return response.content, response["Content-Type"], response["Content-Disposition"]
