"""A minimal transfer app installed only by the test settings.

It tests the job engine (models, actions, worker, transfer processor) without any UI app.
"""
