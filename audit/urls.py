from django.urls import path

from audit import job_views, views

app_name = "audit"

urlpatterns = [
    path("audit/", views.event_list, name="event_list"),
    path("audit/events/<str:event_id>/", views.event_detail, name="event_detail"),
    path("audit/exports/", views.export_create, name="export_create"),
    path("audit/exports/<str:export_id>/", views.export_status, name="export_status"),
    path("audit/exports/<str:export_id>/download/", views.export_download, name="export_download"),
    path("audit/public-keys", views.public_keys, name="public_keys"),
    path("audit/public-keys/<str:fingerprint>.pem", views.public_key_pem, name="public_key_pem"),
    path("jobs/", job_views.job_list, name="job_list"),
    path("jobs/<str:name>/", job_views.job_detail, name="job_detail"),
    path("jobs/<str:name>/start/", job_views.job_start, name="job_start"),
]
