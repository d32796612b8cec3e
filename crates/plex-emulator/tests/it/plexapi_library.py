"""python-plexapi, the client most Plex scripts use, runs its everyday library workflow against the
PMS emulator.

Usage: python3 plexapi_library.py BASE_URL TOKEN MEDIA_DIR

MEDIA_DIR is a tree written by `plex-emulator gen-library` (Music, Movies, TV Shows, Photos). Every
call goes through plexapi's own methods, paths, headers and parsing; a session records the paging
headers plexapi sends. The script prints one JSON object with what plexapi got per step; the Rust
test (`plexapi_library.rs`) checks it against the library DB, the prefs and the generated counts.
A step that raises ends the script with plexapi's traceback.
"""

import json
import os
import sys
import time

import requests
from plexapi.exceptions import BadRequest, Unauthorized
from plexapi.server import PlexServer

BASE, TOKEN, MEDIA = sys.argv[1], sys.argv[2], sys.argv[3]
DEADLINE_S = 90
PAGE = 7  # small, so every listing takes several pages


class Recording(requests.Session):
    """Records the X-Plex-Container-Start/Size headers of each request plexapi sends."""

    def __init__(self):
        super().__init__()
        self.pages = []

    def request(self, method, url, *args, **kwargs):
        h = kwargs.get("headers") or {}
        if "X-Plex-Container-Start" in h:
            path = url[len(BASE):].split("?", 1)[0]
            self.pages.append(
                [path, int(h["X-Plex-Container-Start"]), int(h["X-Plex-Container-Size"])]
            )
        return super().request(method, url, *args, **kwargs)


def wait_for(what, cond):
    """Poll cond() every 50 ms until it is true; fail after DEADLINE_S."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {DEADLINE_S}s waiting for {what}")


def idle(plex):
    """No activity and no queued or running job on any section (what plexapi's own test
    bootstrap waits for: every section's updateQueueSize is 0)."""
    return not plex.activities and all(
        s.timeline().updateQueueSize == 0 for s in plex.library.sections()
    )


def wait_idle(plex):
    wait_for("the server to be idle", lambda: idle(plex))


def keys(items):
    return [int(i.ratingKey) for i in items]


out = {}
session = Recording()

# Connect with the server's token; a wrong token is refused.
plex = PlexServer(BASE, TOKEN, session=session)
out["connect"] = {
    "machineIdentifier": plex.machineIdentifier,
    "version": plex.version,
    "myPlex": plex.myPlex,
    "myPlexSigninState": plex.myPlexSigninState,
    "platform": plex.platform,
}
try:
    PlexServer(BASE, "not-the-token")
    out["connect"]["wrongToken"] = "accepted"
except Unauthorized as e:
    out["connect"]["wrongToken"] = type(e).__name__

lib = plex.library
out["library"] = {"title1": lib.title1, "identifier": lib.identifier}

# Settings: read, change one of each type, save, and read back through a new connection.
s = plex.settings
out["settings"] = {
    "count": len(s.all()),
    "before": {
        "FriendlyName": s.get("FriendlyName").value,
        "autoEmptyTrash": s.get("autoEmptyTrash").value,
        "ButlerStartHour": s.get("ButlerStartHour").value,
        "GenerateIntroMarkerBehavior": s.get("GenerateIntroMarkerBehavior").value,
    },
}
s.get("FriendlyName").set("plexapi emulated")
# Trash is emptied by hand below, so it must survive a scan.
s.get("autoEmptyTrash").set(False)
# An empty butler window and no marker work after scans: the test does not depend on the hour
# (plexapi's own test bootstrap moves the window away and turns these off too).
s.get("ButlerStartHour").set(0)
s.get("ButlerEndHour").set(0)
s.get("GenerateIntroMarkerBehavior").set("never")
s.get("GenerateCreditsMarkerBehavior").set("never")
try:
    s.get("ButlerStartHour").set(24)
    out["settings"]["outOfRange"] = "accepted"
except BadRequest as e:
    out["settings"]["outOfRange"] = type(e).__name__
s.save()
plex = PlexServer(BASE, TOKEN, session=session)
s = plex.settings
out["settings"]["after"] = {
    "FriendlyName": s.get("FriendlyName").value,
    "autoEmptyTrash": s.get("autoEmptyTrash").value,
    "ButlerStartHour": s.get("ButlerStartHour").value,
    "ButlerEndHour": s.get("ButlerEndHour").value,
    "GenerateIntroMarkerBehavior": s.get("GenerateIntroMarkerBehavior").value,
}
out["settings"]["friendlyName"] = plex.friendlyName
lib = plex.library

# library.add checks each location through /services/browse first.
SECTIONS = [
    ("Music", "artist", "tv.plex.agents.music", "Plex Music"),
    ("Movies", "movie", "tv.plex.agents.movie", "Plex Movie"),
    ("TV Shows", "show", "tv.plex.agents.series", "Plex TV Series"),
    ("Photos", "photo", "com.plexapp.agents.none", "Plex Photo Scanner"),
]
for name, kind, agent, scanner in SECTIONS:
    lib.add(name=name, type=kind, agent=agent, scanner=scanner,
            location=os.path.join(MEDIA, name), language="en-US")
try:
    lib.add(name="Nowhere", type="movie", agent="tv.plex.agents.movie", scanner="Plex Movie",
            location=os.path.join(MEDIA, "Nowhere"))
    out["addMissing"] = "accepted"
except BadRequest as e:
    out["addMissing"] = str(e)
out["browse"] = sorted(p.path for p in plex.browse(MEDIA, includeFiles=False))

out["sections"] = [
    {"key": x.key, "title": x.title, "type": x.type, "agent": x.agent, "scanner": x.scanner,
     "locations": x.locations}
    for x in lib.sections()
]
music = lib.section("Music")
movies = lib.section("Movies")
shows = lib.section("TV Shows")
photos = lib.section("Photos")

# update() and cancelUpdate(): cancel the music scan once it shows as an activity (the server is
# started with a scan rate, so the scan is still running), then scan everything.
music.update()
seen = []
wait_for("the music scan activity", lambda: seen.extend(plex.activities) or seen)
music.cancelUpdate()
wait_idle(plex)
out["update"] = {
    "activities": [
        {"type": a.type, "title": a.title, "cancellable": a.cancellable,
         "progress": a.progress} for a in seen
    ],
    "tracksAfterCancel": music.totalViewSize(libtype="track"),
}
lib.update()
wait_idle(plex)
out["update"]["tracks"] = music.totalViewSize(libtype="track")
out["activitiesIdle"] = len(plex.activities)

# List and page every kind of item.
session.pages.clear()
listings = {
    "artists": lambda **kw: music.all(**kw),
    "albums": lambda **kw: music.searchAlbums(**kw),
    "tracks": lambda **kw: music.searchTracks(**kw),
    "movies": lambda **kw: movies.all(**kw),
    "shows": lambda **kw: shows.all(**kw),
    "episodes": lambda **kw: shows.searchEpisodes(**kw),
    "photoalbums": lambda **kw: photos.all(**kw),
    "photos": lambda **kw: photos.searchPhotos(**kw),
}
out["lists"] = {}
for name, fetch in listings.items():
    before = len(session.pages)
    items = fetch(container_size=PAGE)
    out["lists"][name] = {
        "keys": keys(items),
        "types": sorted({i.type for i in items}),
        "classes": sorted({type(i).__name__ for i in items}),
        "pages": session.pages[before:],
    }
# MusicSection.albums() asks its own endpoint.
out["albumsEndpoint"] = keys(music.albums())
tracks = music.searchTracks()
out["trackParents"] = {
    str(t.ratingKey): [t.parentTitle, t.grandparentTitle, t.media[0].parts[0].file] for t in tracks
}
# What plexapi's Media objects hold for tracks and movies.
out["media"] = {
    str(i.ratingKey): [str(x) for x in (m.container, m.audioCodec, m.videoCodec, m.duration,
                                        m.bitrate, m.width, m.height)]
    for i in tracks + movies.all() for m in i.media
}
before = len(session.pages)
out["maxresults"] = {
    "keys": keys(music.searchTracks(maxresults=10, container_size=3)),
    "pages": session.pages[before:],
}

# Search: a word of the first track's title, through the section, the library and hub search.
word = tracks[0].title.split()[-1].lower()
out["search"] = {
    "word": word,
    "section": keys(music.searchTracks(title=word)),
    "library": keys(lib.search(title=word, libtype="track")),
    "hubs": keys(plex.search(word, mediatype="track")),
    "hubsLimited": len(plex.search(word, mediatype="track", limit=2)),
}
movie = movies.all()[0]
out["search"]["movie"] = int(movie.ratingKey)
out["search"]["movieUpper"] = keys(movies.search(title=movie.title.upper()))

# Butler tasks: list them, run loudness analysis, and an unknown name.
out["butler"] = {"tasks": sorted(t.name for t in plex.butlerTasks())}
plex.runButlerTask("LoudnessAnalysis")
try:
    plex.runButlerTask("NoSuchTask")
    out["butler"]["unknown"] = "accepted"
except BadRequest as e:
    out["butler"]["unknown"] = type(e).__name__
wait_idle(plex)

# analyze() on one track and on the movie section.
track = tracks[-1]
track.analyze()
movies.analyze()
wait_idle(plex)
track.reload()
out["analyze"] = {
    "track": int(track.ratingKey),
    # plexapi's Media does not parse this attribute; read it from the element plexapi received.
    "trackMediaAnalysisVersion": int(track.media[0]._data.attrib["mediaAnalysisVersion"]),
}

# Trash: a movie file disappears, a rescan trashes its item, emptyTrash() removes it.
gone = movies.all()[0]
os.remove(gone.media[0].parts[0].file)
movies.update()
wait_idle(plex)
listed = movies.all()
plex.library.emptyTrash()
wait_idle(plex)
out["trash"] = {
    "gone": int(gone.ratingKey),
    "listedBefore": keys(listed),
    "deletedAtBefore": [int(m.ratingKey) for m in listed if m._data.attrib.get("deletedAt")],
    "after": keys(movies.all()),
}

print(json.dumps(out))
