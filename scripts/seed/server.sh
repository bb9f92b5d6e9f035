#!/bin/bash
# The seed's server (MigrOS's experiment), run on the server's node:
# ib_send_bw in container cont-moving on the swarm's overlay network with a
# fixed address. migros passes the node's device as its socket directory
# (the seed: --device /dev/infiniband/uverbs0).
# Environment: IMAGE, SERVER_IP, ITERS.
docker run -d --name cont-moving --network rdma-net --ip $SERVER_IP \
    -v /run/migros:/run/migros $IMAGE \
    stdbuf -oL ib_send_bw -d rxe0 -b -n $ITERS
