"""Ray job entrypoint for the nightly archive scan; takes exactly the arguments of `vidpipe scan`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/nightly_scan.py s3://archive/videos s3://archive/scans --model models:/vidpipe@champion

Run it on a schedule (cron, a KubeRay RayCronJob). A second scan of the same OUTPUT while one runs
exits 1 with a one-line message; a scan that was killed leaves a lease that expires (--lease-seconds),
and the next scan finishes or discards what it left.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    # Inside a submitted job the driver runs on the cluster: join it rather than start a Ray.
    os.environ.setdefault("RAY_ADDRESS", "auto")
    sys.exit(main(["scan", *sys.argv[1:]]))
