from django.urls import path

from . import views

urlpatterns = [path("", views.kms_endpoint)]
