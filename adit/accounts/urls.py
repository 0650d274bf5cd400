from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("password-change/", views.PasswordChangeView.as_view(), name="password_change"),
    path("profile/", views.profile, name="profile"),
    path("active-group/", views.switch_active_group, name="switch_active_group"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/delete/", views.delete_token, name="delete_token"),
    path("python/", views.python_client, name="python_client"),
]

# The same login/logout pages under their plain names, which LOGIN_URL and
# LOGOUT_REDIRECT_URL use; adit/urls.py includes these without a namespace.
plain_urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
]
