from django.urls import path

from compliance import api, campaign_views, views

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
    path("api/v1/findings", api.findings, name="api_findings"),
]
