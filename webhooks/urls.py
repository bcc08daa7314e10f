"""Routes for the signing secret, registered endpoints and the delivery log (under `api/`)."""
from django.urls import path

from webhooks import api, endpoint_api

urlpatterns = [
    path("webhook-secret/", api.SigningSecretApi.as_view(), name="webhook-secret"),
    path("webhook-secret/rotate/", api.SigningSecretRotateApi.as_view(), name="webhook-secret-rotate"),
    path("webhook-endpoints/", endpoint_api.EndpointListCreateApi.as_view(), name="webhook-endpoint-list"),
    path("webhook-endpoints/<uuid:endpoint_id>/", endpoint_api.EndpointDetailApi.as_view(), name="webhook-endpoint"),
    path("webhook-endpoints/<uuid:endpoint_id>/secret/", endpoint_api.EndpointSecretApi.as_view(),
         name="webhook-endpoint-secret"),
    path("webhook-endpoints/<uuid:endpoint_id>/secret/rotate/", endpoint_api.EndpointSecretRotateApi.as_view(),
         name="webhook-endpoint-secret-rotate"),
    path("webhook-endpoints/<uuid:endpoint_id>/test/", endpoint_api.EndpointTestApi.as_view(),
         name="webhook-endpoint-test"),
    path("webhook-endpoints/<uuid:endpoint_id>/recover/", endpoint_api.EndpointRecoverApi.as_view(),
         name="webhook-endpoint-recover"),
    path("deliveries/", endpoint_api.DeliveryListApi.as_view(), name="delivery-list"),
]
