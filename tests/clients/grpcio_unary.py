"""One unary gRPC call made by gRPC C-core (grpcio), the client behind grpc C++, Ruby and PHP.

Usage: grpcio_unary.py SOCKET METHOD_PATH REQUEST_HEX
Prints the reply message as hex, or `ERROR <code> <details>` and exits 1. The messages are
bytes both ways, so no generated stubs are needed. The channel is left as C-core sets it up for
a unix socket, whatever `:authority` that sends.
"""
import sys

import grpc


def main():
    socket, path, request = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
    with grpc.insecure_channel("unix:" + socket) as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        try:
            reply = call(request, timeout=60)
        except grpc.RpcError as error:
            print("ERROR", error.code().name, error.details())
            sys.exit(1)
    print(reply.hex())


main()
