"""Reads a Prometheus text exposition the way Prometheus's own Python client
does, and prints what it understood as JSON.

    metrics.py URL [--timeout SECONDS]

Fetches URL (a Keel server's /metrics), parses the body with
prometheus_client.parser.text_string_to_metric_families, and prints one
JSON object on stdout:

    {"content_type": "...",
     "families": [{"name": ..., "type": ..., "help": ...,
                   "samples": [{"name": ..., "labels": {...}, "value": ...}]}]}

Values are numbers, except +Inf, -Inf and NaN, which are strings. A body
the parser rejects is an error: the message goes to stderr, exit code 1.
"""

import argparse
import json
import math
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def number(value):
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    with urllib.request.urlopen(args.url, timeout=args.timeout) as response:
        content_type = response.headers.get("Content-Type", "")
        text = response.read().decode("utf-8")
    try:
        families = [
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "samples": [
                    {
                        "name": sample.name,
                        "labels": dict(sample.labels),
                        "value": number(sample.value),
                    }
                    for sample in family.samples
                ],
            }
            for family in text_string_to_metric_families(text)
        ]
    except Exception as error:  # the parser raises ValueError and others
        print(f"prometheus_client cannot parse {args.url}: {error!r}", file=sys.stderr)
        return 1
    json.dump({"content_type": content_type, "families": families}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
