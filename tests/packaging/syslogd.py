#!/usr/bin/env python3
"""Minimal syslog receiver for the packaging tests.

usage: syslogd.py SOCKET OUTFILE
Binds a Unix datagram socket at SOCKET and appends every datagram, as one
line, to OUTFILE. Runs until killed.
"""
import os
import socket
import sys

path, out = sys.argv[1], sys.argv[2]
if os.path.exists(path):
    os.unlink(path)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
os.chmod(path, 0o666)
with open(out, "ab", buffering=0) as f:
    while True:
        data = sock.recv(65536)
        f.write(data.rstrip(b"\n").replace(b"\n", b" ") + b"\n")
