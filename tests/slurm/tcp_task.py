#!/usr/bin/python3
# Run by srun as every task of a step (cluster_test.sh): task 0 listens on a TCP port on its node, the other tasks
# find task 0's node address from Slurm alone (no DNS: the first node of SLURM_JOB_NODELIST, and its NodeAddr as
# slurmctld knows it) and connect to it from their own network namespaces. This is the rendezvous mpx's Slurm
# launcher needs: task 0 is the coordinator, the others join it.
#
# Usage: tcp_task.py PORT
# Prints one line per task: task 0 the hello of every other task and where it came from, the others what they
# connected to, the reply, and what the other places a task might look for task 0's address say.
import os
import socket
import subprocess
import sys
import time

port = int(sys.argv[1])
procid = int(os.environ["SLURM_PROCID"])
ntasks = int(os.environ["SLURM_NTASKS"])
host = socket.gethostname()
deadline = time.monotonic() + 60


def first_node_addr():
    """The first node of the job and its NodeAddr, asked of slurmctld (scontrol reads SLURM_CONF)."""
    nodes = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                           check=True, capture_output=True, text=True).stdout.split()
    fields = subprocess.run(["scontrol", "show", "-o", "node", nodes[0]],
                            check=True, capture_output=True, text=True).stdout.split()
    return nodes[0], dict(f.split("=", 1) for f in fields if "=" in f)["NodeAddr"]


if procid == 0:
    # Listen on every address of this node's namespace: the others' connections come in through eth0.
    with socket.create_server(("", port)) as server:
        server.settimeout(deadline - time.monotonic())
        for _ in range(ntasks - 1):
            conn, peer = server.accept()
            with conn:
                hello = conn.makefile().readline().strip()
                conn.sendall(f"welcome {hello.split()[0]}\n".encode())
                print(f"task 0 on {host}: got '{hello}' from {peer[0]}", flush=True)
else:
    first, addr = first_node_addr()
    try:
        resolved = socket.gethostbyname(first)  # through the node's /etc/hosts (cluster.sh write_node_etc)
    except OSError as e:
        resolved = f"fails ({e})"
    # Task 0 may not listen yet: retry until the deadline.
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with conn:
        local = conn.getsockname()[0]
        conn.sendall(f"{procid} {host}\n".encode())
        reply = conn.makefile().readline().strip()
    print(f"task {procid} on {host}: connected to {first} NodeAddr={addr}:{port} from {local}, "
          f"reply '{reply}'; gethostbyname({first})={resolved} "
          f"SLURM_LAUNCH_NODE_IPADDR={os.environ.get('SLURM_LAUNCH_NODE_IPADDR')} "
          f"SLURM_SRUN_COMM_HOST={os.environ.get('SLURM_SRUN_COMM_HOST')}", flush=True)
