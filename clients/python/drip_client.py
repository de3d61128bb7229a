#!/usr/bin/env python3
"""A small Python client of drip's gRPC contract (drip.v1.RateLimiterService).

It compiles ../../crates/drip-server/proto/drip.proto with grpcio-tools at
run time into a temporary directory (no generated code is kept in the
repository), so it proves the proto is usable outside Rust.

    pip install grpcio grpcio-tools
    python3 clients/python/drip_client.py --target 127.0.0.1:50051 [--token T]

Run as a script it plays a short scenario against a running `drip serve`:
configure a bucket, send allows (the last ones refused), read its status,
list a shape bucket's queue, delete them; it exits 0 when every answer is as the contract says.
"""

import argparse
import importlib
import os
import sys
import tempfile
import uuid

import grpc
from grpc_tools import protoc

PROTO = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)),
                 "..", "..", "crates", "drip-server", "proto", "drip.proto"))


def load_stubs(proto=PROTO):
    """Compiles drip.proto into a temporary directory and imports it."""
    out = tempfile.mkdtemp(prefix="drip-py-")
    include = os.path.dirname(proto)
    # grpc_tools ships the well-known protos; drip.proto needs none, but
    # pass them as protoc does.
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["grpc_tools.protoc", f"-I{include}", f"-I{well_known}",
            f"--python_out={out}", f"--grpc_python_out={out}",
            os.path.basename(proto)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"grpc_tools.protoc could not compile {proto}")
    sys.path.insert(0, out)
    return importlib.import_module("drip_pb2"), importlib.import_module("drip_pb2_grpc")


class DripClient:
    """The RPCs of drip.v1.RateLimiterService, with the admin token if any."""

    def __init__(self, target, token=None, timeout=10.0):
        self.pb, grpc_mod = load_stubs()
        self.channel = grpc.insecure_channel(target)
        self.stub = grpc_mod.RateLimiterServiceStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout

    def configure_bucket(self, bucket_id, capacity, leak_rate, mode="police"):
        req = self.pb.ConfigureBucketRequest(
            bucket_id=bucket_id, mode=mode, capacity=capacity, leak_rate=leak_rate)
        return self.stub.ConfigureBucket(req, metadata=self.metadata, timeout=self.timeout).bucket

    def allow_request(self, bucket_id, key="", cost=None, request_id=None):
        req = self.pb.AllowRequestRequest(bucket_id=bucket_id, key=key)
        if cost is not None:
            req.cost = cost
        if request_id is not None:
            req.request_id = request_id
        return self.stub.AllowRequest(req, timeout=self.timeout)

    def get_bucket_status(self, bucket_id, key=""):
        req = self.pb.GetBucketStatusRequest(bucket_id=bucket_id, key=key)
        return self.stub.GetBucketStatus(req, timeout=self.timeout).bucket

    def get_queued_requests(self, bucket_id, key=""):
        """The requests admitted and not yet departed (shape mode), in order."""
        req = self.pb.GetQueuedRequestsRequest(bucket_id=bucket_id, key=key)
        return list(self.stub.GetQueuedRequests(req, timeout=self.timeout).requests)

    def delete_bucket(self, bucket_id):
        req = self.pb.DeleteBucketRequest(bucket_id=bucket_id)
        self.stub.DeleteBucket(req, metadata=self.metadata, timeout=self.timeout)

    def close(self):
        self.channel.close()


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def scenario(client):
    """Configure, allow (3 admitted, 2 refused), status, delete."""
    bucket = "py-" + uuid.uuid4().hex[:8]
    # 3 units, leaking one per hour: nothing leaks while the test runs.
    b = client.configure_bucket(bucket, capacity=3, leak_rate=1 / 3600)
    check(b.bucket_id == bucket and b.capacity == 3 and b.mode == "police",
          f"configure answered {b}")

    answers = [client.allow_request(bucket, key="alice", request_id=f"py-{i}")
               for i in range(4)]
    answers.append(client.allow_request(bucket, key="alice"))
    allowed = [a.allowed for a in answers]
    ids = [a.request_id for a in answers]
    check(ids[:4] == ["py-0", "py-1", "py-2", "py-3"], f"request ids echoed: {ids}")
    check(ids[4].startswith("req_"), f"a request id is made when absent: {ids[4]}")
    check(allowed == [True, True, True, False, False], f"allowed: {allowed}")
    check(answers[3].retry_after_ms > 0, f"a refusal has a retry_after_ms: {answers[3]}")

    s = client.get_bucket_status(bucket, key="alice")
    counts = (s.total_requests, s.allowed_requests, s.rejected_requests)
    check(counts == (5, 3, 2), f"status counters (total, allowed, rejected): {counts}")

    # A shape bucket lists its queue: ids in order, turns an hour apart.
    queue = bucket + "-q"
    client.configure_bucket(queue, capacity=3, leak_rate=1 / 3600, mode="shape")
    for i in range(3):
        client.allow_request(queue, key="bob", request_id=f"q-{i}")
    listed = client.get_queued_requests(queue, key="bob")
    check([r.request_id for r in listed] == ["q-0", "q-1", "q-2"], f"queue: {listed}")
    gaps = [b.estimated_process_time_ms - a.estimated_process_time_ms
            for a, b in zip(listed, listed[1:])]
    # 1/3600 as a decimal rate is 1 per ~3599.997 s.
    check(all(3_599_000 <= g <= 3_601_000 for g in gaps), f"turns an hour apart: {gaps}")
    client.delete_bucket(queue)

    client.delete_bucket(bucket)
    try:
        client.get_bucket_status(bucket, key="alice")
        check(False, "status of a deleted bucket answered")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, f"deleted bucket: {e.code()}")

    # Bad input is INVALID_ARGUMENT naming the field.
    try:
        client.configure_bucket(bucket, capacity=0, leak_rate=1)
        check(False, "capacity 0 was accepted")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"capacity 0: {e.code()}")
        check("capacity" in e.details(), f"capacity 0: {e.details()}")
    print(f"ok: bucket {bucket}: allowed {allowed}, status {counts}, deleted")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051",
                        help="the gRPC address of drip serve (default 127.0.0.1:50051)")
    parser.add_argument("--token", default=None,
                        help="the admin token, if drip serve has one")
    args = parser.parse_args()
    client = DripClient(args.target, args.token)
    try:
        scenario(client)
    finally:
        client.close()


if __name__ == "__main__":
    main()
