"""One router per resource: manifests, scans, queue, outcomes, feed, health, ui."""
