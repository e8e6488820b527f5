"""The Kafka broker seen from Herald: the embedded Tansu process, and creating the topics Herald needs."""
