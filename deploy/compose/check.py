"""What the Compose schema cannot see in compose.yaml, checked against the real
`rally` binary and the real keys.sh (run by deploy/check.sh as
`python deploy/compose/check.py RALLY_BINARY [--smoke DATABASE_URL REDIS_URL]`):

- every service a `depends_on` names exists, and one waited on as healthy has a healthcheck;
- every secret, volume and env file a service uses is declared, and keys.sh writes each file;
- every RALLY_* variable a rally service sets (in compose, its env files or the
  image's ENV) and every flag of its command is one that role's `--help` lists,
  since a misspelt variable is silently ignored;
- the public keys keys.sh derives are the ones a `rally lobby` and a `rally
  matchmaker` started with its seeds announce;
- with `--smoke DATABASE_URL REDIS_URL`: one lobby, matchmaker, shard and bot
  farm of the file run as processes here, from the file's own commands and
  variables (compose names and ports mapped to free loopback ports, /run/secrets
  to keys.sh's files, PostgreSQL and Redis to the given ones); each must pass
  its compose healthcheck, and the bots must play a match each and stop.

Prints one line per problem and exits 1 if there is any.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from ruamel.yaml import YAML

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
problems = []


def problem(text):
    problems.append(text)
    print(f"compose: {text}")


def env_file_keys(path):
    keys = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            keys[name] = value
    return keys


def help_text(rally, words):
    run = subprocess.run([rally, *words, "--help"], capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        problem(f"`rally {' '.join(words)} --help` failed: {run.stderr.strip()}")
    return run.stdout


def role_words(command):
    words = []
    for word in command:
        if word.startswith("-"):
            break
        words.append(word)
    return words


def dockerfile_env():
    text = (ROOT / "deploy/docker/Dockerfile").read_text().replace("\\\n", " ")
    names = set()
    for line in text.splitlines():
        if line.startswith("ENV "):
            names.update(re.findall(r"\b(RALLY_[A-Z_]+)=", line))
    return names


def ready_line(command):
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        if not line:
            problem(f"{' '.join(command[:2])} printed no ready line: {child.stderr.read().strip()[-500:]}")
            return None
        return json.loads(line)
    finally:
        child.kill()
        child.wait()


def check_keys(rally, secrets):
    public = env_file_keys(secrets / "matchmaker.env") | env_file_keys(secrets / "shard.env")
    with tempfile.TemporaryDirectory() as data:
        lobby = ready_line([rally, "lobby", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
                            "--data-dir", data, "--ready-json",
                            "--access-signing-key-file", str(secrets / "rally-access-signing-key")])
        if lobby is None:
            return
        announced = ",".join(lobby["access_token_keys"])
        if announced != public["RALLY_ACCESS_TOKEN_KEYS"]:
            problem(f"keys.sh derived RALLY_ACCESS_TOKEN_KEYS={public['RALLY_ACCESS_TOKEN_KEYS']}, "
                    f"the lobby announces {announced}")
        matchmaker = ready_line([rally, "matchmaker", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
                                 "--data-dir", data, "--ready-json", "--access-token-key", announced,
                                 "--token-signing-key-file", str(secrets / "rally-token-signing-key")])
        if matchmaker is not None and matchmaker["token_key"] != public["RALLY_TOKEN_KEYS"]:
            problem(f"keys.sh derived RALLY_TOKEN_KEYS={public['RALLY_TOKEN_KEYS']}, "
                    f"the matchmaker announces {matchmaker['token_key']}")


def dockerfile_env_values():
    text = (ROOT / "deploy/docker/Dockerfile").read_text().replace("\\\n", " ")
    values = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            values.update(re.findall(r"\b(RALLY_[A-Z_]+)=(\S+)", line))
    return values


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def smoke(rally, compose, secrets, scratch, database_url, redis_url):
    """Runs lobby-1, matchmaker-1, shard-1 and bots-1 as processes, as compose would."""
    import random
    import time

    services = compose["services"]
    ports = {}

    def port(service, number):
        return ports.setdefault((service, number), free_port())

    def interpolate(value):
        return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", lambda match: match.group(1), str(value))

    def rewrite(service, value):
        value = interpolate(value)
        if value.startswith("postgres://"):
            return database_url
        if value.startswith("redis://"):
            return redis_url
        value = value.replace("/run/secrets/", f"{secrets}/")
        value = re.sub(r"\b(?:0\.0\.0\.0|127\.0\.0\.1):(\d+)", lambda m: f"127.0.0.1:{port(service, int(m.group(1)))}", value)
        names = "|".join(re.escape(name) for name in services)
        return re.sub(rf"\b({names}):(\d+)", lambda m: f"127.0.0.1:{port(m.group(1), int(m.group(2)))}", value)

    suffix = f"{random.randrange(1 << 32):08x}"
    image_env = dockerfile_env_values()
    running = []

    def environment(name):
        service = services[name]
        env = {key: value for key, value in os.environ.items() if not key.startswith("RALLY_")}
        env.update(image_env)
        env.pop("ORT_DYLIB_PATH", None)
        for env_file in service.get("env_file") or []:
            env.update(env_file_keys(secrets / Path(env_file).name))
        env.update({key: str(value) for key, value in (service.get("environment") or {}).items()})
        env = {key: rewrite(name, value) if key.startswith("RALLY_") else value for key, value in env.items()}
        data = scratch / name
        data.mkdir()
        env["RALLY_DATA_DIR"] = str(data)
        env["RALLY_REDIS_PREFIX"] = f"compose-smoke-{suffix}"
        env["RALLY_LOG_FORMAT"] = "text"
        return env

    def command(name):
        words = [rewrite(name, word) for word in services[name]["command"]]
        if "--username-prefix" in words:
            at = words.index("--username-prefix") + 1
            words[at] = f"{words[at]}-{suffix}"
        return words

    def healthy(name, env, child):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "rally", test
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if child.poll() is not None:
                problem(f"smoke: {name} exited with {child.returncode}: {child.stderr.read()[-800:]}")
                return False
            probe = subprocess.run([rally, *test[2:]], env=env, capture_output=True, text=True, timeout=30)
            if probe.returncode == 0:
                print(f"compose smoke: {name} healthy ({probe.stdout.strip()})")
                return True
            time.sleep(0.5)
        problem(f"smoke: {name} not healthy within 60 s: {probe.stderr.strip()}")
        return False

    try:
        for name in ["lobby-1", "matchmaker-1", "shard-1"]:
            env = environment(name)
            child = subprocess.Popen([rally, *command(name)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
            running.append(child)
            if not healthy(name, env, child):
                return
        env = environment("bots-1")
        words = [*command("bots-1"), "--matches-per-bot", "1"]
        try:
            bots = subprocess.run([rally, *words], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            problem("smoke: bots-1 did not finish a match each within 300 s")
            return
        summary = (bots.stdout.strip().splitlines() or [""])[-1]
        if bots.returncode != 0 or not re.match(r"[1-9]\d* matches", summary):
            problem(f"smoke: bots-1 exited {bots.returncode}: {summary} {bots.stderr.strip()[-800:]}")
        else:
            print(f"compose smoke: bots-1 played through lobby-1, matchmaker-1 and shard-1: {summary}")
    finally:
        for child in running:
            child.terminate()
        for child in running:
            try:
                child.wait(timeout=40)
            except subprocess.TimeoutExpired:
                child.kill()


def main():
    rally = sys.argv[1]
    args = sys.argv[2:]
    smoke_urls = None
    if args[:1] == ["--smoke"]:
        smoke_urls, args = args[1:3], args[3:]
    compose_file = Path(args[0]) if args else HERE / "compose.yaml"
    compose = YAML(typ="safe").load(compose_file.read_text())
    services = compose["services"]
    declared_secrets = compose.get("secrets", {})
    declared_volumes = compose.get("volumes", {})
    rally_image = compose["x-rally"]["image"]
    image_env = dockerfile_env()
    helps = {}

    with tempfile.TemporaryDirectory() as scratch:
        secrets = Path(scratch) / "secrets"
        subprocess.run([str(HERE / "keys.sh"), str(secrets)], check=True, capture_output=True)
        written = {path.name for path in secrets.iterdir()}
        for name, secret in declared_secrets.items():
            if Path(secret["file"]).parent != Path("secrets") or Path(secret["file"]).name not in written:
                problem(f"secret {name}: keys.sh writes no {secret['file']}")

        for name, service in services.items():
            for dependency, rule in (service.get("depends_on") or {}).items():
                if dependency not in services:
                    problem(f"{name} depends on {dependency}, which is no service")
                    continue
                target = services[dependency]
                healthcheck = target.get("healthcheck") or {}
                if rule.get("condition") == "service_healthy" and (not healthcheck or healthcheck.get("disable")):
                    problem(f"{name} waits for {dependency} to be healthy, which has no healthcheck")
            for secret in service.get("secrets") or []:
                secret = secret if isinstance(secret, str) else secret["source"]
                if secret not in declared_secrets:
                    problem(f"{name} uses secret {secret}, which is not declared")
            for volume in service.get("volumes") or []:
                source = volume.split(":")[0]
                if not source.startswith((".", "/")) and source not in declared_volumes:
                    problem(f"{name} mounts volume {source}, which is not declared")
                if source.startswith(".") and not (HERE / source).resolve().is_relative_to(ROOT / "deploy"):
                    problem(f"{name} mounts {source}, outside deploy/")
            env_files = service.get("env_file") or []
            env = dict(service.get("environment") or {})
            for env_file in env_files:
                if Path(env_file).name not in written:
                    problem(f"{name} reads env file {env_file}, which keys.sh does not write")
                    continue
                env.update(env_file_keys(secrets / Path(env_file).name))

            if service.get("image") != rally_image:
                continue
            words = role_words(service.get("command") or [])
            key = " ".join(words)
            if key not in helps:
                helps[key] = help_text(rally, words)
            role_help = helps[key]
            if "RALLY_HEALTH_URL" not in helps:
                helps["RALLY_HEALTH_URL"] = help_text(rally, ["health"])
            for variable in sorted(set(env) | image_env):
                if not variable.startswith("RALLY_"):
                    continue
                # The image sets each role's variables; only those this role reads must be in its help.
                if variable in image_env and variable not in env:
                    continue
                where = helps["RALLY_HEALTH_URL"] if variable == "RALLY_HEALTH_URL" else role_help
                if f"env: {variable}=" not in where:
                    problem(f"{name}: `rally {key}` reads no {variable} (not in its --help)")
            for flag in [word for word in service.get("command") or [] if word.startswith("--")]:
                if flag.split("=")[0] not in role_help:
                    problem(f"{name}: `rally {key}` has no flag {flag}")

        every_help = "".join(help_text(rally, [role]) for role in ["lobby", "matchmaker", "shard", "health"])
        for variable in sorted(image_env):
            if f"env: {variable}=" not in every_help:
                problem(f"the Dockerfile sets {variable}, which no role reads")

        check_keys(rally, secrets)
        if smoke_urls and not problems:
            smoke(rally, compose, secrets, Path(scratch), *smoke_urls)

    if problems:
        sys.exit(1)
    print(f"compose: {len(services)} services, their RALLY_* variables and flags, and keys.sh's keys check out")


if __name__ == "__main__":
    main()
