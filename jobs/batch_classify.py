"""Ray job entrypoint for batch classification; takes exactly the arguments of `vidpipe classify`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/batch_classify.py s3://bucket/videos s3://bucket/predictions --model models:/vidpipe@champion
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    # Inside a submitted job the driver runs on the cluster: join it rather than start a Ray.
    os.environ.setdefault("RAY_ADDRESS", "auto")
    sys.exit(main(["classify", *sys.argv[1:]]))
