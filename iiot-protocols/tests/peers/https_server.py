"""A small HTTPS server for the OTA image fetch tests (tests/ota_http.rs).

    python https_server.py --cert server.pem --key server.key --file image.bin \
        [--token T] [--client-ca ca.pem]

Listens on 127.0.0.1 on a free port and prints "Serving HTTPS on 127.0.0.1 port N"
once it listens. GET /<file name> serves the file: 200, or 206 for "Range: bytes=N-"
and "bytes=N-M", 416 with "Content-Range: bytes */<length>" from past the end; the
query string is ignored; any other path is 404. With --token every request needs
"Authorization: Bearer T" (401 otherwise). With --client-ca the TLS handshake
requires a client certificate issued by that CA.
"""

import argparse
import http.server
import os
import re
import ssl
import urllib.parse


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--token")
    p.add_argument("--client-ca")
    args = p.parse_args()
    name = "/" + os.path.basename(args.file)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def empty(self, code, headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            if args.token and self.headers.get("Authorization") != f"Bearer {args.token}":
                return self.empty(401, [("WWW-Authenticate", "Bearer")])
            if urllib.parse.urlsplit(self.path).path != name:
                return self.empty(404)
            size = os.path.getsize(args.file)
            first, last, status = 0, size - 1, 200
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if m:
                first, status = int(m[1]), 206
                if m[2]:
                    last = min(int(m[2]), size - 1)
                if first >= size or last < first:
                    return self.empty(416, [("Content-Range", f"bytes */{size}")])
            self.send_response(status)
            self.send_header("Content-Length", str(last - first + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            with open(args.file, "rb") as f:
                f.seek(first)
                left = last - first + 1
                while left > 0:
                    buf = f.read(min(left, 65536))
                    if not buf:
                        break
                    self.wfile.write(buf)
                    left -= len(buf)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(args.client_ca)

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def finish_request(self, request, client_address):
            # The handshake runs in the connection's thread, not in accept().
            try:
                tls = ctx.wrap_socket(request, server_side=True)
            except OSError:
                return  # the client refused our certificate, or sent none
            try:
                self.RequestHandlerClass(tls, client_address, self)
            finally:
                tls.close()

    with Server(("127.0.0.1", 0), Handler) as httpd:
        print(f"Serving HTTPS on 127.0.0.1 port {httpd.server_address[1]}", flush=True)
        httpd.serve_forever()


if __name__ == "__main__":
    main()
