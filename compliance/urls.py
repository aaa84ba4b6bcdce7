from django.urls import path

from compliance import api, campaign_views, review_views, views

app_name = "compliance"

urlpatterns = [
    path("compliance/", views.compliance_overview, name="compliance_overview"),
    path("compliance/findings/<str:finding_id>/", views.finding_detail, name="finding_detail"),
    path("compliance/findings/<str:finding_id>/suppress/", views.finding_suppress, name="finding_suppress"),
    path("compliance/findings/<str:finding_id>/unsuppress/", views.finding_unsuppress, name="finding_unsuppress"),
    path("compliance/keys/<str:key_id>/panel/", views.key_panel, name="key_panel"),
    path("compliance/principals/<int:principal_id>/panel/", views.principal_panel, name="principal_panel"),
    path("compliance/trend/", campaign_views.trend_data, name="trend_data"),
    path("compliance/report/", campaign_views.compliance_report, name="compliance_report"),
    path("compliance/campaigns/", campaign_views.campaign_list, name="campaign_list"),
    path("compliance/campaigns/start/", campaign_views.campaign_start, name="campaign_start"),
    path("compliance/campaigns/settings/", campaign_views.campaign_settings, name="campaign_settings"),
    path("compliance/campaigns/<str:campaign_id>/", campaign_views.campaign_detail, name="campaign_detail"),
    path("compliance/campaigns/<str:campaign_id>/report/", campaign_views.campaign_report, name="campaign_report"),
    path(
        "compliance/campaign-items/<str:item_id>/decide/",
        campaign_views.campaign_item_decide,
        name="campaign_item_decide",
    ),
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
    path(
        "compliance/previews/grant-requests/<int:request_id>/",
        review_views.grant_request_preview,
        name="grant_request_preview",
    ),
    path("api/v1/findings", api.findings, name="api_findings"),
    path("api/v1/principals/<path:arn>/access-review", api.access_review, name="api_access_review"),
    path("api/v1/policy-previews", api.policy_previews, name="api_policy_previews"),
]
