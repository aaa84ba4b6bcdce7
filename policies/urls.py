from django.urls import path

from policies import api, grant_request_views, people_views, sso_views, views

app_name = "policies"

urlpatterns = [
    path("login/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("login/sso/", sso_views.oidc_login, name="oidc_login"),
    path("login/sso/callback/", sso_views.oidc_callback, name="oidc_callback"),
    path("mfa/verify/", views.mfa_verify, name="mfa_verify"),
    path("mfa/enroll/", views.mfa_enroll, name="mfa_enroll"),
    path("principals/", views.principal_list, name="principal_list"),
    path("principals/new/", views.principal_create, name="principal_create"),
    # People: administrators manage dashboard users.
    path("people/", people_views.people_list, name="people_list"),
    path("people/new/", people_views.person_create, name="person_create"),
    path("people/<int:user_id>/", people_views.person_detail, name="person_detail"),
    path("people/<int:user_id>/edit/", people_views.person_update, name="person_update"),
    path("people/<int:user_id>/active/", people_views.person_set_active, name="person_set_active"),
    path("people/<int:user_id>/totp-reset/", people_views.person_totp_reset, name="person_totp_reset"),
    path("people/<int:user_id>/unlock/", people_views.person_unlock, name="person_unlock"),
    path("principals/policies/", views.managed_policy_put, name="managed_policy_put"),
    path("principals/<int:principal_id>/", views.principal_detail, name="principal_detail"),
    path("principals/<int:principal_id>/access-keys/", views.principal_access_key_create, name="access_key_create"),
    path(
        "principals/<int:principal_id>/access-keys/status/", views.principal_access_key_status, name="access_key_status"
    ),
    path(
        "principals/<int:principal_id>/access-keys/delete/", views.principal_access_key_delete, name="access_key_delete"
    ),
    path("principals/<int:principal_id>/policies/", views.principal_policy_put, name="principal_policy_put"),
    path("principals/<int:principal_id>/mfa-devices/", views.principal_mfa_device_create, name="mfa_device_create"),
    path(
        "principals/<int:principal_id>/mfa-devices/delete/",
        views.principal_mfa_device_delete,
        name="mfa_device_delete",
    ),
    path("principals/<int:principal_id>/trust-policy/", views.principal_trust_policy_put, name="trust_policy_put"),
    path(
        "principals/<int:principal_id>/policies/delete/", views.principal_policy_delete, name="principal_policy_delete"
    ),
    path(
        "principals/<int:principal_id>/policies/attach/", views.principal_policy_attach, name="principal_policy_attach"
    ),
    path(
        "principals/<int:principal_id>/delegations/",
        views.principal_delegation_create,
        name="principal_delegation_create",
    ),
    path(
        "principals/<int:principal_id>/delegations/delete/",
        views.principal_delegation_delete,
        name="principal_delegation_delete",
    ),
    # Grant requests: the dashboard inbox and pages, and the REST API (SigV4).
    path("grant-requests/", grant_request_views.grant_request_list, name="grant_request_list"),
    path("grant-requests/new/", grant_request_views.grant_request_create, name="grant_request_create"),
    path("grant-requests/badge/", grant_request_views.grant_request_badge, name="grant_request_badge"),
    path("grant-requests/<int:request_id>/", grant_request_views.grant_request_detail, name="grant_request_detail"),
    path(
        "grant-requests/<int:request_id>/decide/",
        grant_request_views.grant_request_decide,
        name="grant_request_decide",
    ),
    path(
        "grant-requests/<int:request_id>/withdraw/",
        grant_request_views.grant_request_withdraw,
        name="grant_request_withdraw",
    ),
    path("api/v1/grant-requests", api.grant_requests, name="api_grant_requests"),
    path("api/v1/grant-requests/<int:request_id>", api.grant_request, name="api_grant_request"),
    path(
        "api/v1/grant-requests/<int:request_id>/withdraw",
        api.grant_request_withdraw,
        name="api_grant_request_withdraw",
    ),
]
