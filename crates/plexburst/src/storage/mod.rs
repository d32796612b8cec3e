//! Where the media comes from: a path already on the target, or an rclone mount of S3.
