"""Follow a fleet on the broker: every collector's samples as they are published (paho-mqtt).

Run: ``python examples/fleet/consume_mqtt.py [--prefix fleet] [--collector fleet-2] [--seconds 10]
[--url mqtt://127.0.0.1:1883]`` while ``run_fleet.py`` runs (or any collector publishing JSON to
``<prefix>/<collector>/<context id>/<variable id>``). Prints one line per sample with the
collector that published it (the payload's ``collector``, the writer's ``client_id``), each run
event (retained: the runs already going are shown at once, with their metadata), and a count per
collector at the end. Delivery is at least once: a repeated ``id`` is the same sample again.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--prefix", default="fleet", help="the fleet's topic root (fleet)")
    parser.add_argument("--collector", default="+", help="one collector's name (default: all)")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    url = urlsplit(args.url)
    per_collector: Counter[str] = Counter()
    seen: set[str] = set()

    def show(sample: dict[str, Any], collector: str, context_id: int) -> None:
        again = " (again)" if sample["id"] in seen else ""
        seen.add(sample["id"])
        per_collector[collector] += not again
        print(
            f"{collector:<10} context={context_id} variable={sample['variable_id']:<4} {sample['read_at']} "
            f"{sample['quality']:<9} {sample['value']!r}{again}"
        )

    def on_message(_client: Any, _userdata: Any, msg: Any) -> None:
        if not msg.payload:
            return  # a cleared retained message
        doc = json.loads(msg.payload)
        if "event" in doc:  # a run started or stopped: the collector's metadata and variables
            print(f"{doc['collector']:<10} context={doc['context_id']} run {doc['event']}: {doc['metadata']}")
        elif "samples" in doc:  # message = "batch"
            for sample in doc["samples"]:
                show(sample, doc["collector"], doc["context_id"])
        else:  # message = "sample"
            show(doc, doc["collector"], doc["context_id"])

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    client.loop_start()
    client.subscribe(f"{args.prefix}/{args.collector}/#", qos=1)
    if not subscribed.wait(10):
        raise SystemExit("no SUBACK from the broker")
    time.sleep(args.seconds)
    client.disconnect()
    client.loop_stop()
    print("distinct samples per collector:", dict(sorted(per_collector.items())))


if __name__ == "__main__":
    main()
