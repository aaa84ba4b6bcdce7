from django.urls import path

from compliance import api, review_views, views

app_name = "compliance"

urlpatterns = [
    path("compliance/", views.compliance_overview, name="compliance_overview"),
    path("compliance/findings/<str:finding_id>/", views.finding_detail, name="finding_detail"),
    path("compliance/findings/<str:finding_id>/suppress/", views.finding_suppress, name="finding_suppress"),
    path("compliance/findings/<str:finding_id>/unsuppress/", views.finding_unsuppress, name="finding_unsuppress"),
    path("compliance/keys/<str:key_id>/panel/", views.key_panel, name="key_panel"),
    path("compliance/principals/<int:principal_id>/panel/", views.principal_panel, name="principal_panel"),
    path(
        "compliance/principals/<int:principal_id>/access-review/",
        review_views.access_review,
        name="access_review",
    ),
    path("compliance/external-access/", review_views.external_access, name="external_access"),
    path("compliance/previews/keys/<str:key_id>/", review_views.key_policy_preview, name="key_policy_preview"),
    path(
        "compliance/previews/principals/<int:principal_id>/",
        review_views.identity_policy_preview,
        name="identity_policy_preview",
    ),
    path("compliance/previews/policies/", review_views.managed_policy_preview, name="managed_policy_preview"),
    path("api/v1/findings", api.findings, name="api_findings"),
    path("api/v1/principals/<path:arn>/access-review", api.access_review, name="api_access_review"),
    path("api/v1/policy-previews", api.policy_previews, name="api_policy_previews"),
]
