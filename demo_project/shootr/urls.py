from django.urls import path

from demo_project.shootr import views

app_name = "shootr"
urlpatterns = [
    path("", views.home, name="home"),
    path("b/<uuid:pk>/", views.bundle_page, name="bundle"),
    path("b/<uuid:pk>/status.json", views.bundle_status, name="bundle-status"),
]
