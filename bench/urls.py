"""The baseline app's routes."""
from django.urls import path

from bench import views

urlpatterns = [
    path("constant/", views.ConstantApi.as_view()),
    path("rows/<uuid:row_id>/", views.ReadApi.as_view()),
    path("rows/", views.InsertPublishApi.as_view()),
]
