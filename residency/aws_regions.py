"""The AWS region names that exist (commercial partition), used to reject typos in regions.yaml."""

AWS_REGIONS: frozenset[str] = frozenset(
    {
        "us-east-1", "us-east-2", "us-west-1", "us-west-2",
        "af-south-1",
        "ap-east-1", "ap-east-2", "ap-south-1", "ap-south-2",
        "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
        "ap-southeast-5", "ap-southeast-6", "ap-southeast-7",
        "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
        "ca-central-1", "ca-west-1",
        "eu-central-1", "eu-central-2", "eu-west-1", "eu-west-2", "eu-west-3",
        "eu-south-1", "eu-south-2", "eu-north-1",
        "il-central-1", "me-south-1", "me-central-1",
        "mx-central-1", "sa-east-1",
    }
)

# Regions of AWS's other partitions: real, but a stack here is built for the commercial partition
# (its ARNs, endpoints and accounts), so they are refused with a message that says so.
OTHER_PARTITIONS: dict[str, str] = {
    "cn-north-1": "aws-cn", "cn-northwest-1": "aws-cn",
    "us-gov-east-1": "aws-us-gov", "us-gov-west-1": "aws-us-gov",
    "eusc-de-east-1": "aws-eusc",
}
