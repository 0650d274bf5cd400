from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("announcement/", views.edit_announcement, name="edit_announcement"),
    path("health/", views.health, name="health"),
]
