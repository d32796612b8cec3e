"""python-plexapi, the reference plex.tv client (plex.md §4.5), against the emulated plex.tv.

Usage: python3 plexapi_contract.py BASE_URL ACCOUNT_TOKEN

Every request plexapi makes to https://plex.tv (or https://clients.plex.tv) goes to BASE_URL
instead, with plexapi's own paths, headers and parsing untouched. This script plays the user
typing codes at plex.tv/link (PUT /api/v2/pins/link with ACCOUNT_TOKEN) and prints one JSON line
with what plexapi got; the Rust test asserts on it.
"""

import json
import sys
import urllib.parse

import requests
from plexapi.myplex import MyPlexAccount, MyPlexPinLogin

BASE, ACCOUNT_TOKEN = sys.argv[1], sys.argv[2]
HOSTS = ("https://plex.tv", "https://clients.plex.tv")


class ToEmulator(requests.Session):
    """A session that sends plex.tv's URLs to the emulator."""

    def request(self, method, url, *args, **kwargs):
        for host in HOSTS:
            if url.startswith(host):
                url = BASE + url[len(host):]
        return super().request(method, url, *args, **kwargs)


def link(code):
    """What the user does at plex.tv/link with a signed-in browser."""
    r = requests.put(
        BASE + "/api/v2/pins/link",
        params={"code": code},
        headers={"X-Plex-Token": ACCOUNT_TOKEN},
        timeout=10,
    )
    assert r.status_code == 204, (r.status_code, r.text)


session = ToEmulator()
# plexapi polls once a second; a tenth keeps the test short without changing the protocol.
MyPlexPinLogin.POLLINTERVAL = 0.1
out = {}

# The threaded PIN flow: run() polls GET /api/v2/pins/{id} until authToken appears.
login = MyPlexPinLogin(session=session)
out["pin"] = login.pin
login.run(timeout=30)
link(out["pin"])
assert login.waitForLogin(), "PIN login did not finish with a token"
out["token"] = login.token

# A PIN nobody links until it expires (the emulated clock jumps past its 15 minutes): plexapi's
# poll gets a 404 and marks the login expired. Before the claim below, which must stay fresh.
stale = MyPlexPinLogin(session=session)
stale.pin
requests.post(BASE + "/_emulator/clock/advance", params={"secs": 1000}, timeout=10)
assert not stale.checkLogin(), "an expired pin does not log in"
out["staleExpired"] = stale.expired

# The account behind that token, and a claim token for a new server.
account = MyPlexAccount(token=login.token, session=session)
out["username"] = account.username
out["email"] = account.email
out["id"] = account.id
out["subscriptionActive"] = account.subscriptionActive
out["subscriptionFeatures"] = account.subscriptionFeatures
out["roles"] = account.roles
out["claim"] = account.claimToken()

# The OAuth variant (strong=true): the code travels in the OAuth URL; polled with checkLogin().
oauth = MyPlexPinLogin(session=session, oauth=True)
url = oauth.oauthUrl()
code = urllib.parse.parse_qs(url.split("?", 1)[1])["code"][0]
out["oauthCode"] = code
assert not oauth.checkLogin(), "an unlinked OAuth pin has no token"
link(code)
assert oauth.checkLogin(), "the linked OAuth pin has a token"
out["oauthToken"] = oauth.token

print(json.dumps(out))
