from django.urls import path

from compliance import api, views

app_name = "compliance"

urlpatterns = [
    path("compliance/", views.compliance_overview, name="compliance_overview"),
    path("compliance/findings/<str:finding_id>/", views.finding_detail, name="finding_detail"),
    path("compliance/findings/<str:finding_id>/suppress/", views.finding_suppress, name="finding_suppress"),
    path("compliance/findings/<str:finding_id>/unsuppress/", views.finding_unsuppress, name="finding_unsuppress"),
    path("compliance/keys/<str:key_id>/panel/", views.key_panel, name="key_panel"),
    path("compliance/principals/<int:principal_id>/panel/", views.principal_panel, name="principal_panel"),
    path("api/v1/findings", api.findings, name="api_findings"),
]
