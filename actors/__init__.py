"""The only package that imports Ray: thin actor wrappers around the plain studyrooms library.

* :mod:`actors.directory`    Directory / DirectoryActor: room -> room host, worker registry, placement, health
* :mod:`actors.media_worker` MediaWorker / MediaWorkerActor: one studyrooms.sfu Worker per core
* :mod:`actors.room_host`    RoomHost / RoomHostActor: a RoomService with its ports over Ray
* :mod:`actors.signaling`    Signaling / SignalingActor: the Socket.IO server and RayRoomsPort
* :mod:`actors.app`          start_app(settings) -> AppHandle (supervisor)
* :mod:`actors.cli`          the ``studyrooms`` console script (serve, token)
* :mod:`actors.runtime`      local Ray on loopback / attach, node discovery, media-slot planning
* :mod:`actors.hop`          awaiting remote calls with the studyrooms error tree intact
"""
