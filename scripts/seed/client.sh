#!/bin/bash
# The seed's client, run on the client's node: ib_send_bw in container
# cont-static against the server's overlay address.
# Environment: IMAGE, SERVER_IP, CLIENT_IP, ITERS.
docker run -d --name cont-static --network rdma-net --ip $CLIENT_IP \
    -v /run/migros:/run/migros $IMAGE \
    stdbuf -oL ib_send_bw -d rxe0 -b -n $ITERS $SERVER_IP
