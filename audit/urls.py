from django.urls import path

from audit import alarm_views, job_views, views

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
    path("alarms/", alarm_views.alarm_list, name="alarm_list"),
    path("alarms/new/", alarm_views.alarm_create, name="alarm_create"),
    path("alarms/<str:alarm_id>/", alarm_views.alarm_detail, name="alarm_detail"),
    path("alarms/<str:alarm_id>/edit/", alarm_views.alarm_edit, name="alarm_edit"),
    path("alarms/<str:alarm_id>/delete/", alarm_views.alarm_delete, name="alarm_delete"),
    path("alarms/<str:alarm_id>/acknowledge/", alarm_views.alarm_acknowledge, name="alarm_acknowledge"),
    path("alarms/<str:alarm_id>/data/", alarm_views.alarm_data, name="alarm_data"),
]
