"""Bucket drop: MinIO's S3 event records on `storage.uploads`, and a periodic reconcile of the
uploads bucket, each turning an object into exactly one job through the gateway.

- `notification`: MinIO's NATS target publishes `{"EventName", "Key": "bucket/key", "Records":
  [S3 record]}` with no `Nats-Msg-Id`, and may repeat a record. `decode_notification` checks that
  shape and wraps it in an internal CloudEvent (`NOTIFICATION_TYPE`, not in the public catalogue:
  nothing outside ingest ever sees it) so the host can run `BucketDrop.handle` like any handler.
- `drop`: an object's job id is derived from (bucket, key, eTag) (`ids.object_job_id`): every
  repeat of a notification, the reconcile and any replica compute the same id, the request's
  event id `<job>:requested` is a JetStream duplicate, and a job record that already exists stops
  the request before it is sent.
- `reconcile`: lists the bucket every `UPLOADS_RECONCILE_INTERVAL_S` seconds and requests a job
  for each object that has none, so a lost notification never loses a file and a store without
  notifications (SeaweedFS in the embedded stack) still turns a dropped file into a transcript.
- `options`: what a dropped object asks for, in its user metadata.

Objects under `klipnote-api/` are the API's own uploads (it announces them itself) and folder
markers (keys ending in `/`) are not media: both are skipped. A created record whose key has a
whole `.` or `..` segment goes to the DLQ with that reason (no S3 client here can fetch such a
key). A 0-byte object is not skipped: it gets a job, which the model function fails with the code
`media_empty`, so a broken upload shows up as a failed job rather than vanishing.

Options ride in user metadata (`X-Amz-Meta-Language`, `-Model`, `-Formats`, `-Webhook`,
`-Audio-Track`; names case-insensitive; webhook headers never, as anyone who can read the object
reads them). The router admits the request as it admits any (`admission.Admission.admit`): an unknown
model, a language that is no ISO 639-1 code or a refused webhook (SSRF, signing secret) fails the
job with its code.

An object version whose job was deleted (its id a tombstone in the `jobs` KV: the same bytes put
back under the same key, a late notification) gets no job again: the drop logs it and the reconcile
passes over it from then on.

The reconcile leaves objects younger than RECONCILE_GRACE_S to their notification, so with
MinIO it requests only what a notification really missed, and skips objects a job of any way in
already names (a request by another system for an object in the uploads bucket).
"""

from functions.ingest.uploads.drop import BucketDrop
from functions.ingest.uploads.notification import NOTIFICATION_TYPE, decode_notification
from functions.ingest.uploads.reconcile import RECONCILE_GRACE_S, Reconciler

__all__ = ["NOTIFICATION_TYPE", "RECONCILE_GRACE_S", "BucketDrop", "Reconciler", "decode_notification"]
