"""Starts `spool serve` on a free loopback port for the Tools/ scripts and stops it afterwards."""
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_path():
    return subprocess.run([os.path.join(ROOT, "Tools", "fetch-model.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()


class Server:
    def __init__(self, *args):
        binary = os.environ.get("SPOOL_BIN", os.path.join(ROOT, ".build", "release", "spool"))
        cmd = [binary, "serve", "-m", model_path(), "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.port = None
        deadline = time.time() + 120
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            m = re.search(r"on http://[^:]+:(\d+)", line)
            if m and "spool serve" in line:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.proc.kill()
            sys.exit("spool serve did not start")
        self.url = f"http://127.0.0.1:{self.port}"

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
