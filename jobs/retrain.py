"""Ray job entrypoint for retraining; takes exactly the arguments of `vidpipe train`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/retrain.py s3://bucket/labelled --out model.pt --workers 4 \
        --storage-path s3://bucket/ray-train --register vidpipe --mlflow-uri http://mlflow:5000

On a multi-node cluster --storage-path must be storage every node reaches (S3, NFS). Resubmitting
the same command after a crash resumes from the last epoch's checkpoint.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    # Inside a submitted job the driver runs on the cluster: join it rather than start a Ray.
    os.environ.setdefault("RAY_ADDRESS", "auto")
    sys.exit(main(["train", *sys.argv[1:]]))
