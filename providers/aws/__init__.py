from providers.aws.provider import AwsProvider

__all__ = ["AwsProvider"]
