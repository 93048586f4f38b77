"""The SFU control plane in mediasoup's vocabulary: Worker, Router, transports, Producer, Consumer."""
