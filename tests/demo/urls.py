"""The demo's URLs, plus media files: ``static()`` serves them only with DEBUG on."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.static import serve


def media(request: HttpRequest, path: str) -> HttpResponse:
    # Read at request time: each test has its own MEDIA_ROOT.
    return serve(request, path, document_root=settings.MEDIA_ROOT)


urlpatterns = [
    path("media/<path:path>", media),
    path("", include("demo_project.urls")),
]
