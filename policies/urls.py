from django.urls import path

from policies import views

app_name = "policies"

urlpatterns = [
    path("login/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("mfa/verify/", views.mfa_verify, name="mfa_verify"),
    path("mfa/enroll/", views.mfa_enroll, name="mfa_enroll"),
]
