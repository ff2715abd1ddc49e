"""Baseline (a) of the health benchmark: the plain script most integrations start from, one onvif-zeep (the sync
package, 0.2.12) ``ONVIFCamera`` per device, one device after the other, the 4 calls of the ONVIF stages.

Runs in its own virtualenv (onvif-zeep and onvif-zeep-async both install a top-level ``onvif``): bench_health.py
makes it (.bench/onvif-zeep-venv) and runs this file there. Imports nothing of the project. Reads a JSON object
{"devices": [[host, port], ...], "username": ..., "password": ...} on stdin; prints one JSON line
{"ok": n, "failed": n, "wall_s": s, "cpu_s": s, "errors": {...}} on stdout.
"""

import json
import sys
import time


def check(host, port, username, password):
    """What a plain script does per device: ONVIFCamera (it asks GetCapabilities for the service addresses),
    GetSystemDateAndTime, GetDeviceInformation, GetProfiles, GetStreamUri of the main profile."""
    from onvif import ONVIFCamera

    camera = ONVIFCamera(host, port, username, password)
    camera.devicemgmt.GetSystemDateAndTime()
    camera.devicemgmt.GetDeviceInformation()
    media = camera.create_media_service()
    profiles = media.GetProfiles()
    main = max(profiles, key=_pixels)
    request = media.create_type("GetStreamUri")
    request.ProfileToken = main.token
    request.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
    return bool(media.GetStreamUri(request).Uri)


def _pixels(profile):
    encoder = getattr(profile, "VideoEncoderConfiguration", None)
    resolution = getattr(encoder, "Resolution", None)
    return int(resolution.Width * resolution.Height) if resolution is not None else 0


def main():
    job = json.load(sys.stdin)
    import onvif  # noqa: F401  (imported before timing, as a long-running script has it loaded)

    ok = failed = 0
    errors = {}
    c0 = time.process_time()
    t0 = time.perf_counter()
    for host, port in job["devices"]:
        try:
            good = check(host, int(port), job["username"], job["password"])
        except Exception as exc:  # the baseline counts failures instead of stopping
            good = False
            name = type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
            if "first_error" not in errors:
                errors["first_error"] = f"{name}: {exc}"[:300]
        ok += good
        failed += not good
    print(json.dumps({"ok": ok, "failed": failed, "wall_s": time.perf_counter() - t0,
                      "cpu_s": time.process_time() - c0, "errors": errors}))


if __name__ == "__main__":
    main()
