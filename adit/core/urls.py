from django.urls import path

from . import job_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("announcement/", views.edit_announcement, name="edit_announcement"),
    path("health/", views.health, name="health"),
    path("jobs/", job_views.all_jobs, name="all_jobs"),
]
