"""A real S3 API on 127.0.0.1 for the tests: moto's standalone server, started and stopped by PID, with IAM
authentication on (so a request without credentials, or with wrong ones, is refused as by AWS).

The server counts its first `SETUP_ACTIONS` requests as unauthenticated: they create an IAM user allowed
`s3:*` and its access key. `S3Server.env` holds what a client process needs: endpoint and that key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from child_process import ProcessOutput
from ports import free_port

SETUP_ACTIONS = 3  # create_user, put_user_policy, create_access_key
POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]  # AWS_ENDPOINT_URL, the user's key, region; AWS_EC2_METADATA_DISABLED
    proc: subprocess.Popen
    output: ProcessOutput

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )

    def upload_dir(self, local: Path, bucket: str, prefix: str) -> str:
        """Every file under `local` to `s3://bucket/prefix/...` (the bucket is created); returns that URI."""
        client = self.client()
        client.create_bucket(Bucket=bucket)
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")
        return f"s3://{bucket}/{prefix}"

    def gets(self, path_prefix: str) -> int:
        """GET requests the server logged for paths under `path_prefix` (`/bucket/key...`: path-style). A sentinel
        request goes last and is waited for, so every earlier request's line has been read."""
        import contextlib
        import uuid

        from botocore.exceptions import ClientError

        sentinel = f"sentinel-{uuid.uuid4().hex}"
        with contextlib.suppress(ClientError):  # 404: only its log line matters
            self.client().head_bucket(Bucket=sentinel)
        self.output.wait_for(sentinel, timeout=30)
        return sum(f"GET {path_prefix}" in line for line in list(self.output.lines) if line)  # colour codes precede GET

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.output.close()


def start_s3_server(log_path: Path) -> S3Server:
    """Start the server, wait for its "Running on" line, create the IAM user; the caller stops it."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)}
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed with the process's output)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output = ProcessOutput(proc, log)
    server = S3Server(endpoint, {}, proc, output)
    try:
        output.wait_for("Running on", timeout=60)
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
            region_name="us-east-1",
        )
        iam.create_user(UserName="pipeline")
        iam.put_user_policy(UserName="pipeline", PolicyName="s3", PolicyDocument=POLICY)
        key = iam.create_access_key(UserName="pipeline")["AccessKey"]
    except BaseException:
        server.stop()
        raise
    server.env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata look-up (a timeout on a machine outside EC2)
    }
    return server
