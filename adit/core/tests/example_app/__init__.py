"""A minimal transfer app installed only by the test settings (`adit.settings.test`).

It tests the job engine (models, actions, worker, transfer processor) without any UI app. It
lives under the tests so that production ships no test models: production settings never
install it, and its app label stays `example_app`, so test databases created before the move
keep their tables and migration history.
"""
