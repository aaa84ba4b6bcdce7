from django.urls import path

from keys import views

app_name = "keys"

urlpatterns = [
    path("keys/", views.key_list, name="key_list"),
    path("keys/new/", views.key_create, name="key_create"),
    path("keys/new/usage/", views.key_create_usage, name="key_create_usage"),
    path("keys/suggest/", views.key_suggest, name="key_suggest"),
    path("keys/<str:key_id>/", views.key_detail, name="key_detail"),
    path("keys/<str:key_id>/public-key.pem", views.key_public_key, name="key_public_key"),
    path("keys/<str:key_id>/enable/", views.key_enable, name="key_enable"),
    path("keys/<str:key_id>/disable/", views.key_disable, name="key_disable"),
    path("keys/<str:key_id>/rotate/", views.key_rotate, name="key_rotate"),
    path("keys/<str:key_id>/rotation/", views.key_rotation, name="key_rotation"),
    path("keys/<str:key_id>/schedule-deletion/", views.key_schedule_deletion, name="key_schedule_deletion"),
    path("keys/<str:key_id>/cancel-deletion/", views.key_cancel_deletion, name="key_cancel_deletion"),
    path(
        "keys/<str:key_id>/delete-imported-material/",
        views.key_delete_imported_material,
        name="key_delete_imported_material",
    ),
    path("keys/<str:key_id>/aliases/add/", views.key_alias_add, name="key_alias_add"),
    path("keys/<str:key_id>/aliases/remove/", views.key_alias_remove, name="key_alias_remove"),
    path("keys/<str:key_id>/tags/add/", views.key_tag_add, name="key_tag_add"),
    path("keys/<str:key_id>/tags/remove/", views.key_tag_remove, name="key_tag_remove"),
    path("keys/<str:key_id>/policy/", views.key_policy, name="key_policy"),
    path("keys/<str:key_id>/policy/default-view/", views.key_policy_default_view, name="key_policy_default_view"),
    path("keys/<str:key_id>/description/", views.key_description, name="key_description"),
    path("keys/<str:key_id>/grant-approvals/", views.key_grant_approvals, name="key_grant_approvals"),
    path("key-stores/", views.key_store_list, name="key_store_list"),
    path("usage/", views.usage, name="usage"),
    path("usage/data/", views.usage_data, name="usage_data"),
]
