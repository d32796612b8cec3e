"""Drive the emulator with the official Scaleway Python SDK (PyPI `scaleway`).

Usage: python3 sdk_contract.py API_URL SECRET_KEY PROJECT_ID ORGANIZATION_ID

Every SDK call goes through the SDK's own typed API classes, so each answer is unmarshalled into
the SDK's dataclasses. On top of that, every JSON answer is compared with the dataclass it was
unmarshalled into: a key the dataclass does not know, a required field that is missing, or a value
of the wrong JSON type (or outside an enum) is a failure. The SDK alone would hide those: it fills
missing fields with defaults and passes unknown enum values through.

Prints one JSON line with what was checked; exits non-zero with the first mismatch.
"""

import dataclasses
import datetime
import enum
import json
import sys
import time
import typing
import urllib.request

import requests

from scaleway import Client
from scaleway.block.v1alpha1 import BlockV1Alpha1API
from scaleway.iam.v1alpha1 import IamV1Alpha1API, RuleSpecs
from scaleway.instance.v1 import VolumeServerTemplate
from scaleway.instance.v1.custom_api import InstanceUtilsV1API
from scaleway.marketplace.v2 import MarketplaceV2API
from scaleway_core.api import ScalewayException, ValidationError

API_URL, SECRET, PROJECT, ORG = sys.argv[1:5]
ZONE = "fr-par-1"
GB = 1_000_000_000

# Keys the real API sends (scaleway.md §2.2, §2.11: recorded bodies and the l_ssd entry's fields) that SDK 2.12's dataclasses
# do not model; allowed so the emulator can stay faithful to the wire.
WIRE_ONLY = {
    ("Server", "extra_networks"),
    ("Server", "bootscript"),
    ("VolumeServer", "tags"),
    ("ServerType", "mig_profile"),
    ("ServerTypeCapabilities", "placement_groups"),
    ("ServerTypeCapabilities", "hot_snapshots_local_volume"),
    ("ServerTypeCapabilities", "private_network"),
}

# Required-typed fields the real API answers with null (scaleway.md §2.9: a new IPv4 has
# "prefix":null).
WIRE_NULL = {("Ip", "prefix")}

# ---- Capture every raw answer the SDK receives ----

captured = []
_real_request = requests.request


def _capturing_request(*args, **kwargs):
    resp = _real_request(*args, **kwargs)
    captured.append(
        {
            "method": kwargs.get("method", args[0] if args else "?"),
            "url": kwargs.get("url", args[1] if len(args) > 1 else "?"),
            "status": resp.status_code,
            "headers": dict(resp.headers),
            "body": resp.content,
        }
    )
    return resp


requests.request = _capturing_request

# ---- Comparing JSON with the SDK's dataclasses ----

checked = {"responses": 0, "objects": 0}


class Mismatch(Exception):
    pass


def _hints(cls):
    return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))


def _optional(t):
    args = typing.get_args(t)
    if typing.get_origin(t) is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return True, inner[0] if len(inner) == 1 else typing.Any
    return False, t


def check_value(t, v, where):
    opt, t = _optional(t)
    if v is None:
        if opt:
            return
        raise Mismatch(f"{where}: null for a required {t}")
    origin = typing.get_origin(t)
    if dataclasses.is_dataclass(t):
        check_object(t, v, where)
    elif origin is list:
        if not isinstance(v, list):
            raise Mismatch(f"{where}: expected a list, got {v!r}")
        (item,) = typing.get_args(t)
        for i, x in enumerate(v):
            check_value(item, x, f"{where}[{i}]")
    elif origin is dict:
        if not isinstance(v, dict):
            raise Mismatch(f"{where}: expected an object, got {v!r}")
        _, item = typing.get_args(t)
        for k, x in v.items():
            check_value(item, x, f"{where}.{k}")
    elif isinstance(t, type) and issubclass(t, enum.Enum):
        values = {e.value for e in t}
        if v not in values:
            raise Mismatch(f"{where}: {v!r} is not a {t.__name__} ({sorted(values)})")
    elif t is bool:
        if not isinstance(v, bool):
            raise Mismatch(f"{where}: expected a bool, got {v!r}")
    elif t is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise Mismatch(f"{where}: expected an integer, got {v!r}")
    elif t is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise Mismatch(f"{where}: expected a number, got {v!r}")
    elif t is str:
        if not isinstance(v, str):
            raise Mismatch(f"{where}: expected a string, got {v!r}")
    elif t is datetime.datetime:
        if not isinstance(v, str):
            raise Mismatch(f"{where}: expected a timestamp string, got {v!r}")
        datetime.datetime.fromisoformat(v)


def check_object(cls, raw, where, total_in_header=False):
    if not isinstance(raw, dict):
        raise Mismatch(f"{where}: expected a {cls.__name__} object, got {raw!r}")
    checked["objects"] += 1
    hints = _hints(cls)
    names = {}
    for f in dataclasses.fields(cls):
        names[f.name.rstrip("_")] = f
    for key in raw:
        if key not in names and (cls.__name__, key) not in WIRE_ONLY:
            raise Mismatch(f"{where}: {cls.__name__} has no field {key!r}")
    for key, f in names.items():
        t = hints[f.name]
        opt, _ = _optional(t)
        if key not in raw:
            if key == "total_count" and total_in_header:
                continue
            if not opt:
                raise Mismatch(f"{where}: {cls.__name__}.{key} is missing")
            continue
        if raw[key] is None and (cls.__name__, key) in WIRE_NULL:
            continue
        check_value(t, raw[key], f"{where}.{key}")


def call(fn, **kwargs):
    """Call an SDK method and check its raw answer against the type it returned."""
    captured.clear()
    result = fn(**kwargs)
    last = captured[-1]
    checked["responses"] += 1
    if dataclasses.is_dataclass(result):
        raw = json.loads(last["body"])
        in_header = "X-Total-Count" in last["headers"] or "x-total-count" in last["headers"]
        check_object(type(result), raw, f"{fn.__name__}", total_in_header=in_header)
    return result


def expect_error(status, fn, **kwargs):
    try:
        fn(**kwargs)
    except ScalewayException as e:
        assert e.status_code == status, f"{fn.__name__}: HTTP {e.status_code}, want {status}: {e}"
        return json.loads(e.response.content or b"null")
    raise AssertionError(f"{fn.__name__}({kwargs}) succeeded, want HTTP {status}")


def wait_until(what, cond, secs=30):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {secs}s waiting for {what}")


def gone(inst, server_id):
    try:
        inst.get_server(server_id=server_id)
        return False
    except ScalewayException as e:
        if e.status_code == 404:
            return True
        raise


def emulator(path):
    with urllib.request.urlopen(API_URL + path) as r:
        return json.loads(r.read())


def main():
    client = Client(
        access_key="SCWEMULATOR000000000",
        secret_key=SECRET,
        default_project_id=PROJECT,
        default_organization_id=ORG,
        default_region="fr-par",
        default_zone=ZONE,
        api_url=API_URL,
    )
    inst = InstanceUtilsV1API(client)
    market = MarketplaceV2API(client)
    block = BlockV1Alpha1API(client)
    iam = IamV1Alpha1API(client)

    # ---- Catalog (§2.11, §4) ----
    types = call(inst.list_servers_types, zone=ZONE)
    dev1s = types.servers["DEV1-S"]
    assert dev1s.ncpus == 2 and dev1s.ram == 2 * 2**30, dev1s
    assert dev1s.hourly_price == 0.008976, dev1s.hourly_price
    assert dev1s.volumes_constraint.max_size == 20 * GB
    assert dev1s.network.sum_internet_bandwidth == 200_000_000
    for t in ["DEV1-M", "DEV1-L", "GP1-XS", "GP1-S", "GP1-M"]:
        assert t in types.servers, t
    assert int(types.total_count) == len(types.servers)
    avail = call(inst.get_server_types_availability, zone=ZONE)
    assert avail.servers["DEV1-S"].availability == "available"

    # ---- Marketplace label resolution (§2.8) ----
    local = call(
        market.list_local_images,
        image_label="ubuntu_noble",
        zone=ZONE,
        type_="instance_local",
        order_by="type_asc",
    )
    local_img = next(i for i in local.local_images if "DEV1-S" in i.compatible_commercial_types)
    assert local_img.type_ == "instance_local" and local_img.zone == ZONE
    sbs = call(
        market.list_local_images, image_label="debian_bookworm", zone=ZONE, type_="instance_sbs"
    )
    sbs_img = sbs.local_images[0]
    assert sbs_img.type_ == "instance_sbs"
    call(market.get_local_image, local_image_id=local_img.id)
    image = call(inst.get_image, image_id=local_img.id).image
    assert image.id == local_img.id

    # ---- Create (§2.1) ----
    # The legacy Instance validation body is what the SDK turns into its ValidationError.
    try:
        inst.create_server(commercial_type="DEV9-Z", image=local_img.id)
        raise AssertionError("an unknown commercial type was accepted")
    except ValidationError as e:
        assert e.status_code == 400 and "commercial_type" in e.errors, e.errors
    run = "r1"
    created = call(
        inst.create_server,
        commercial_type="DEV1-S",
        image=local_img.id,
        name=f"plexjob-{run}",
        dynamic_ip_required=True,
        tags=["plexjob", f"plexjob-run={run}"],
        volumes={"0": VolumeServerTemplate(volume_type="l_ssd", size=20 * GB, name=f"plexjob-{run}-root")},
    ).server
    sid = created.id
    assert created.state == "stopped", created.state
    assert created.allowed_actions == ["poweron", "backup"]
    assert created.project == PROJECT and created.commercial_type == "DEV1-S"
    assert created.volumes["0"].volume_type == "l_ssd" and created.volumes["0"].size == 20 * GB
    assert created.public_ips == [] and created.public_ip is None
    root_volume = created.volumes["0"].id
    call(inst.get_volume, volume_id=root_volume)
    got = call(inst.get_server, server_id=sid).server
    assert got.tags == ["plexjob", f"plexjob-run={run}"] and got.dynamic_ip_required

    sbs_server = call(
        inst.create_server,
        commercial_type="GP1-XS",
        image=sbs_img.id,
        name=f"plexjob-{run}-sbs",
        tags=["plexjob"],
        volumes={"0": VolumeServerTemplate(volume_type="sbs_volume", size=15 * GB)},
    ).server
    sbs_volume = sbs_server.volumes["0"].id
    assert sbs_server.volumes["0"].volume_type == "sbs_volume"
    vol = call(block.get_volume, volume_id=sbs_volume)
    assert vol.status == "in_use" and vol.size == 15 * GB
    assert vol.references[0].product_resource_id == sbs_server.id
    expect_error(404, inst.get_volume, volume_id=sbs_volume)

    # ---- User data (§2.6) ----
    cloud_init = b"#cloud-config\nruncmd: [echo hi]\n"
    res = inst.set_server_user_data(server_id=sid, key="cloud-init", content=cloud_init)
    assert res.status_code == 204, res.status_code
    inst.set_server_user_data(server_id=sid, key="extra", content=b"x")
    keys = call(inst.list_server_user_data, server_id=sid).user_data
    assert sorted(keys) == ["cloud-init", "extra"], keys
    assert inst.get_server_user_data(server_id=sid, key="cloud-init").content == cloud_init
    call(inst.delete_server_user_data, server_id=sid, key="extra")
    assert call(inst.list_server_user_data, server_id=sid).user_data == ["cloud-init"]
    everything = inst.get_all_server_user_data(server_id=sid, zone=ZONE)
    assert everything.user_data == {"cloud-init": cloud_init}

    # ---- Power on, wait for running and the dynamic IP (§2.2, §2.3) ----
    task = call(inst.server_action, server_id=sid, action="poweron").task
    assert task.status == "pending" and task.description == "server_batch_poweron"
    err = expect_error(409, inst.server_action, server_id=sid, action="poweroff")
    assert err["type"] == "transient_state", err
    running = wait_until(
        "running",
        lambda: (s := call(inst.get_server, server_id=sid).server).state == "running" and s,
    )
    ipv4 = [ip for ip in running.public_ips if ip.family == "inet"]
    assert len(ipv4) == 1 and ipv4[0].dynamic and ipv4[0].address == "127.0.0.1", ipv4
    assert running.public_ip.address == "127.0.0.1"
    assert running.state_detail == "booting kernel"
    assert "terminate" in running.allowed_actions
    err = expect_error(400, inst.delete_server, server_id=sid)

    # ---- Lists, filters and paging (§2.5) ----
    extra = []
    for i in range(5):
        s = call(
            inst.create_server,
            commercial_type="DEV1-M",
            image=local_img.id,
            name=f"page-{i}",
            tags=["page-test", f"n={i}"],
        ).server
        extra.append(s.id)
    seen = []
    for page in (1, 2, 3):
        res = call(inst.list_servers, tags=["page-test"], per_page=2, page=page)
        assert int(res.total_count) == 5, res.total_count
        seen += [s.id for s in res.servers]
    assert sorted(seen) == sorted(extra), seen
    assert len(inst.list_servers_all(tags=["page-test"], per_page=2)) == 5
    both = call(inst.list_servers, tags=["plexjob", f"plexjob-run={run}"])
    assert [s.id for s in both.servers] == [sid], "tags are ANDed"
    assert len(call(inst.list_servers, name="page-").servers) == 5
    assert len(call(inst.list_servers, project=PROJECT).servers) == 7

    # ---- Flexible IPs (§2.9) ----
    ip = call(inst.create_ip, type_="routed_ipv4", tags=["plexjob"]).ip
    assert ip.state == "detached" and ip.server is None
    ip = call(inst.update_ip, ip=ip.id, server=extra[0]).ip
    assert ip.server.id == extra[0] and ip.state == "attached"
    call(inst.get_ip, ip=ip.address)
    assert len(call(inst.list_ips, tags=["plexjob"]).ips) == 1
    call(inst.delete_ip, ip=ip.id)
    expect_error(404, inst.get_ip, ip=ip.id)

    # ---- IAM: an application key limited to Instances on the project (§2.12) ----
    app = call(iam.create_application, name=f"plexjob-{run}", description="self-destruct").id
    policy = call(
        iam.create_policy,
        description="terminate own servers",
        name=f"plexjob-{run}",
        application_id=app,
        rules=[RuleSpecs(permission_set_names=["InstancesFullAccess"], project_ids=[PROJECT], condition="")],
    )
    assert policy.application_id == app and policy.nb_rules == 1
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
    key = call(
        iam.create_api_key,
        description="per-run key",
        application_id=app,
        expires_at=expires,
        default_project_id=PROJECT,
    )
    assert key.secret_key and key.access_key.startswith("SCW")
    call(iam.get_application, application_id=app)
    call(iam.get_policy, policy_id=policy.id)
    # The lists plexburst reads (whether its key may manage IAM; the sweep's tagged objects).
    assert any(a.id == app for a in call(iam.list_applications, page_size=100).applications)
    assert any(p.id == policy.id for p in call(iam.list_policies, page_size=100).policies)
    assert call(iam.get_api_key, access_key=key.access_key).secret_key is None
    scoped = Client(
        access_key=key.access_key,
        secret_key=key.secret_key,
        default_project_id=PROJECT,
        default_zone=ZONE,
        api_url=API_URL,
    )
    scoped_inst = InstanceUtilsV1API(scoped)
    assert call(scoped_inst.get_server, server_id=sid).server.id == sid
    expect_error(403, IamV1Alpha1API(scoped).get_application, application_id=app)

    # ---- Terminate with the scoped key: l_ssd deleted (§2.3) ----
    call(scoped_inst.server_action, server_id=sid, action="terminate")
    wait_until("the terminated server to be gone", lambda: gone(inst, sid))
    expect_error(404, inst.get_volume, volume_id=root_volume)

    # ---- SBS server: run, terminate; its volume survives and becomes available (§2.7) ----
    call(inst.server_action, server_id=sbs_server.id, action="poweron")
    wait_until("sbs server running", lambda: call(inst.get_server, server_id=sbs_server.id).server.state == "running")
    call(inst.server_action, server_id=sbs_server.id, action="terminate")
    wait_until("sbs server gone", lambda: gone(inst, sbs_server.id))
    vol = wait_until(
        "the SBS root to be available",
        lambda: (v := call(block.get_volume, volume_id=sbs_volume)).status == "available" and v,
    )
    assert vol.references == []
    assert [v.id for v in call(block.list_volumes, zone=ZONE).volumes] == [sbs_volume]
    call(block.delete_volume, volume_id=sbs_volume)

    # ---- DELETE stopped servers: their l_ssd volumes stay (§2.4) ----
    for s in extra:
        server = call(inst.get_server, server_id=s).server
        call(inst.delete_server, server_id=s)
        expect_error(404, inst.get_server, server_id=s)
        v = call(inst.get_volume, volume_id=server.volumes["0"].id).volume
        assert v.server is None, v.server
        call(inst.delete_volume, volume_id=v.id)

    # ---- IAM teardown ----
    call(iam.delete_api_key, access_key=key.access_key)
    call(iam.delete_policy, policy_id=policy.id)
    call(iam.delete_application, application_id=app)

    left = emulator("/_emulator/resources")
    assert left["count"] == 0, json.dumps(left)[:2000]
    print(json.dumps({"ok": True, **checked}))


if __name__ == "__main__":
    try:
        main()
    except (AssertionError, Mismatch) as e:
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
