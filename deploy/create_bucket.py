"""One-shot: create the bucket named by ARCLIP_STORAGE_URL (s3://BUCKET/prefix) if it is missing.

Runs in the arclip image with the replicas' own S3 settings (AWS_ENDPOINT_URL, the shared
credentials file), so it also proves those keys are accepted before any replica starts.
"""

import os
import sys
import time
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError

bucket = urlsplit(os.environ["ARCLIP_STORAGE_URL"]).netloc
s3 = boto3.client("s3")


def missing(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] in ("404", "NoSuchBucket", "NotFound")


for attempt in range(30):  # S3 answers before its filer and volume servers are ready
    try:
        try:
            s3.head_bucket(Bucket=bucket)
            print(f"bucket {bucket} exists")
        except ClientError as exc:
            if not missing(exc):
                raise
            s3.create_bucket(Bucket=bucket)
            s3.head_bucket(Bucket=bucket)
            print(f"created bucket {bucket}")
        sys.exit(0)
    except (ClientError, BotoCoreError) as exc:
        error = exc
        time.sleep(2)
print(f"error: cannot create bucket {bucket}: {error}", file=sys.stderr)
sys.exit(1)
