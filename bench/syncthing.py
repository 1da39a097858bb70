"""Syncthing instances on 127.0.0.1 for side-by-side benchmarks: global and
local discovery, relays, NAT traversal, usage reporting and upgrades off;
every device knows every other's explicit address; one folder shared by all,
watched with Syncthing's most eager setting (fsWatcherDelayS = 1)."""
import json, os, re, shutil, signal, socket, subprocess, time, urllib.request

FOLDER = "bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, work, i):
        self.home = f"{work}/st{i}"
        self.data = f"{work}/sd{i}"
        os.makedirs(self.data)
        os.makedirs(f"{self.data}/.stfolder")
        out = subprocess.run(
            ["syncthing", "generate", f"--home={self.home}", "--no-default-folder", "--skip-port-probing"],
            capture_output=True, text=True, check=True,
        )
        self.id = re.search(r"Device ID: (\S+)", out.stdout + out.stderr).group(1)
        self.gui = free_port()
        self.port = free_port()
        self.key = f"bench-key-{i}"
        self.proc = None

    def write_config(self, peers):
        devices = "\n".join(
            f'<device id="{p.id}" name="{p.id[:7]}" compression="metadata" introducer="false">'
            f"<address>tcp://127.0.0.1:{p.port}</address></device>"
            for p in [self] + peers
        )
        shared = "".join(f'<device id="{p.id}"></device>' for p in [self] + peers)
        cfg = f"""<configuration version="36">
<folder id="{FOLDER}" label="{FOLDER}" path="{self.data}" type="sendreceive" rescanIntervalS="3600"
 fsWatcherEnabled="true" fsWatcherDelayS="1" ignorePerms="false" autoNormalize="true">{shared}
<filesystemType>basic</filesystemType><minDiskFree unit="%">1</minDiskFree></folder>
{devices}
<gui enabled="true" tls="false"><address>127.0.0.1:{self.gui}</address><apikey>{self.key}</apikey></gui>
<options>
<listenAddress>tcp://127.0.0.1:{self.port}</listenAddress>
<globalAnnounceEnabled>false</globalAnnounceEnabled>
<localAnnounceEnabled>false</localAnnounceEnabled>
<relaysEnabled>false</relaysEnabled>
<natEnabled>false</natEnabled>
<startBrowser>false</startBrowser>
<urAccepted>-1</urAccepted>
<autoUpgradeIntervalH>0</autoUpgradeIntervalH>
<crashReportingEnabled>false</crashReportingEnabled>
<setLowPriority>false</setLowPriority>
</options>
</configuration>
"""
        with open(f"{self.home}/config.xml", "w") as f:
            f.write(cfg)

    def start(self):
        log = open(f"{self.home}/log.txt", "a")
        self.proc = subprocess.Popen(
            ["syncthing", "serve", "--no-browser", "--no-restart", f"--home={self.home}"],
            stdout=log, stderr=log, env={**os.environ, "STNOUPGRADE": "1"},
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.api("/rest/system/ping").get("ping") == "pong":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"syncthing in {self.home} did not start")

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def api(self, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.gui}{path}", headers={"X-API-Key": self.key})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def connected(self, other):
        c = self.api("/rest/system/connections")["connections"].get(other.id)
        return bool(c and c.get("connected"))

    def idle(self):
        return self.api(f"/rest/db/status?folder={FOLDER}").get("state") == "idle"

    def out_bytes(self):
        return self.api("/rest/system/connections")["total"]["outBytesTotal"]


class Cluster:
    """`n` Syncthing devices sharing one folder; `start` starts those given."""

    def __init__(self, work, n):
        self.work = work
        self.nodes = [Node(work, i) for i in range(n)]
        for node in self.nodes:
            node.write_config([p for p in self.nodes if p is not node])

    def start(self, nodes=None):
        nodes = nodes if nodes is not None else self.nodes
        for node in nodes:
            node.start()
        up = [p for p in self.nodes if p.proc]
        deadline = time.time() + 120
        while not all(a.connected(b) for a in nodes for b in up if a is not b):
            if time.time() > deadline:
                raise SystemExit("syncthing devices did not connect")
            time.sleep(0.1)
        while not all(n.idle() for n in nodes):
            time.sleep(0.1)

    def close(self):
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.work, ignore_errors=True)
