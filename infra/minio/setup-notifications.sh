#!/bin/sh
# Send every object created in the uploads bucket to NATS (target "klipnote" in minio.env).
# Needs the `mc` client; MINIO_URL, MINIO_ROOT_USER, MINIO_ROOT_PASSWORD from the environment.
# Idempotent: the rule is added only when the bucket does not have it yet.
set -eu
UPLOADS_BUCKET="${UPLOADS_BUCKET:-uploads}"
mc alias set klipnote "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "klipnote/$UPLOADS_BUCKET"
ARN=arn:minio:sqs::KLIPNOTE:nats
if ! mc event ls "klipnote/$UPLOADS_BUCKET" "$ARN" | grep -q "$ARN"; then
  mc event add "klipnote/$UPLOADS_BUCKET" "$ARN" --event put
fi
mc event ls "klipnote/$UPLOADS_BUCKET"
