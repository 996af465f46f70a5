#!/usr/bin/env python3
"""Opens 10,000 clients to a fresh petrel as fast as possible (CONNECT, SUB,
PING each), waits 15 s and counts those that got a PONG, and the
server-side sockets with unread bytes. Run from the repository root after a
release build: python3 perf/connect_burst.py"""
import socket, subprocess, re, time, resource, selectors, sys
h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
p = subprocess.Popen(["target/release/petrel", "-p", "-1", "-a", "127.0.0.1"], stderr=subprocess.PIPE, text=True)
port=None
for line in p.stderr:
    m = re.search(r"Listening for client connections on .*:(\d+)", line)
    if m: port = int(m.group(1))
    if "Server is ready" in line: break
socks=[]
for i in range(10000):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(b'CONNECT {"verbose":false}\r\nSUB idle.%d 1\r\nPING\r\n' % i); socks.append(s)
time.sleep(15)
got=0; noinfo=0
for s in socks:
    s.setblocking(False)
    try: d=s.recv(65536)
    except BlockingIOError: d=b""
    if b"PONG" in d: got+=1
    if not d.startswith(b"INFO"): noinfo+=1
print("pong", got, "no data at all", noinfo)
out = subprocess.run(["ss","-tn","state","established","( sport = :%d )" % port], capture_output=True, text=True).stdout.splitlines()[1:]
rq = [int(l.split()[0]) for l in out]
print("server-side sockets", len(rq), "with unread bytes", sum(1 for r in rq if r>0))
p.kill()
