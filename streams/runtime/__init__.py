"""Running steps on Kafka with Faust: the worker's topics and tables, producing a batch's effects, topic
provisioning."""
