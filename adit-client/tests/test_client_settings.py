from adit_client import AditClient


def test_client_normalizes_url_and_builds_token_header():
    client = AditClient("https://adit.example.org/", "abc123")
    assert client.server_url == "https://adit.example.org"
    assert client.auth_headers == {"Authorization": "Token abc123"}
