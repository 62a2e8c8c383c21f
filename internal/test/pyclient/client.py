"""Gets a token from the broker's OAuth2 endpoint with a Python client
nobody here wrote, then tries a wrong key; prints JSON with the SHA-256
of the token (never the token) and the error the wrong key got.

    python3 - kognic-auth|authlib-basic|requests-oauthlib < client.py

Environment: KOGNIC_AUTH_SERVER (the broker's endpoint base URL),
TB_CLIENT_ID (the tenant), TB_CLIENT_SECRET (an API key) and
TB_WRONG_SECRET.
"""
import hashlib
import json
import os
import sys

server = os.environ["KOGNIC_AUTH_SERVER"]
client_id = os.environ["TB_CLIENT_ID"]
secret = os.environ["TB_CLIENT_SECRET"]
wrong = os.environ["TB_WRONG_SECRET"]


def authlib_fetch(key, auth_method, url):
    from authlib.integrations.requests_client import OAuth2Session, OAuthError

    # As kognic-auth's RequestsAuthSession builds its session.
    s = OAuth2Session(
        client_id=client_id,
        client_secret=key,
        token_endpoint_auth_method=auth_method,
        grant_type="client_credentials",
        token_endpoint=url,
    )
    try:
        return s.fetch_access_token(url=url), None
    except OAuthError as e:
        return None, e.error


def requests_oauthlib_fetch(key, url):
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"  # the test broker is plain http on loopback
    from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error
    from requests_oauthlib import OAuth2Session

    s = OAuth2Session(client=BackendApplicationClient(client_id=client_id))
    try:
        return s.fetch_token(token_url=url, client_id=client_id, client_secret=key), None
    except OAuth2Error as e:
        return None, e.error


def fetch(which, key):
    if which == "kognic-auth":
        return authlib_fetch(key, "client_secret_post", server + "/v1/auth/oauth/token")
    if which == "authlib-basic":
        return authlib_fetch(key, "client_secret_basic", server + "/oauth2/token")
    if which == "requests-oauthlib":
        return requests_oauthlib_fetch(key, server + "/oauth2/token")
    sys.exit("unknown client " + which)


which = sys.argv[1]
token, err = fetch(which, secret)
if err is not None:
    sys.exit(which + ": " + err)
_, wrong_err = fetch(which, wrong)
print(json.dumps({
    "token_sha256": hashlib.sha256(token["access_token"].encode()).hexdigest(),
    "token_type": token["token_type"],
    "expires_in": token["expires_in"],
    "wrong_key": wrong_err,
}))
