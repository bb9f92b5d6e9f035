#!/bin/bash
# The seed's migration, run on the destination node: container $NAME
# (address $IP, command $CMD) moves here from node $SRC (an ssh name).
# As the seed writes it: checkpoint on the source, create here, inspect
# both, scp the checkpoint, remove the old container, start from the
# checkpoint. The address moves with the container through the overlay.
# Dropped from the seed: the writes to /proc/sys/net/rdma_rxe/last_qpn and
# last_mrn before the restore (kernel rxe numbers QPs and MRs
# sequentially, so the seed moved the destination's counters to make the
# restored numbers free); migrosd picks identifiers at random and a
# restore recreates the same ones, refused before anything changes if
# taken (see ARCHITECTURE.md, Identifiers).
# Environment: NAME, SRC, IP, IMAGE, CMD.
set -e
CONTAINERS=/var/lib/docker/containers
ssh $SRC docker checkpoint create $NAME ckpt1
docker create --name $NAME --network rdma-net --ip $IP \
    -v /run/migros:/run/migros $IMAGE $CMD
SRC_ID=$(ssh $SRC docker inspect --format '{{.Id}}' $NAME)
DST_ID=$(docker inspect --format '{{.Id}}' $NAME)
scp -r $SRC:$CONTAINERS/$SRC_ID/checkpoints/ckpt1 $CONTAINERS/$DST_ID/checkpoints/
ssh $SRC docker rm $NAME
docker start --checkpoint ckpt1 $NAME
