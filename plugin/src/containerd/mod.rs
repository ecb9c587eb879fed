//! containerd's own image API, for what the CRI cannot do: give a tag to an image that was
//! pulled by digest.

use containerd_client::services::v1::{
    images_client::ImagesClient, CreateImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use tonic::{metadata::MetadataValue, transport::Channel, Code, Request, Status};

pub mod content;

/// The images service of one containerd namespace.
/// A containerd namespace that cannot travel in gRPC metadata.
#[derive(Debug, thiserror::Error)]
#[error("containerd namespace {0:?} is not ASCII")]
pub struct NamespaceError(String);

#[derive(Clone)]
pub struct Containerd {
    images: ImagesClient<Channel>,
    content: content::ContentStore,
    namespace: MetadataValue<tonic::metadata::Ascii>,
}

impl Containerd {
    pub fn new(channel: Channel, namespace: &str) -> Result<Self, NamespaceError> {
        let content = content::ContentStore::new(channel.clone(), namespace)?;
        let namespace = MetadataValue::try_from(namespace).map_err(|_| NamespaceError(namespace.to_string()))?;
        Ok(Self {
            images: ImagesClient::new(channel),
            content,
            namespace,
        })
    }

    /// The content store and leases of the same namespace.
    pub fn content(&self) -> &content::ContentStore {
        &self.content
    }

    /// The manifest (or index) digest containerd's image `name` points at; `None` when there is
    /// no such image. The CRI cannot tell: it answers by image id, the config's digest, which
    /// OCI artifacts with the same config (the empty one, say) share.
    pub async fn target_digest(&self, name: &str) -> Result<Option<String>, Status> {
        let mut images = self.images.clone();
        let found = images
            .get(self.request(GetImageRequest { name: name.to_string() }))
            .await;
        match found {
            Ok(reply) => Ok(reply.into_inner().image.and_then(|i| i.target).map(|t| t.digest)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// Makes `name` refer to the same content (target and labels) as the image `existing`.
    ///
    /// The CRI plugin learns about the new name from containerd's image events.
    pub async fn tag(&self, existing: &str, name: &str) -> Result<(), Status> {
        let mut images = self.images.clone();
        let source = images
            .get(self.request(GetImageRequest {
                name: existing.to_string(),
            }))
            .await?
            .into_inner()
            .image
            .ok_or_else(|| Status::not_found(format!("containerd has no image {existing}")))?;
        let image = Image {
            name: name.to_string(),
            labels: source.labels,
            target: source.target,
            created_at: None,
            updated_at: None,
        };
        let created = images
            .create(self.request(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                // No field mask: containerd replaces labels and target, so the tag moves.
                images
                    .update(self.request(UpdateImageRequest {
                        image: Some(image),
                        update_mask: None,
                        source_date_epoch: None,
                    }))
                    .await
                    .map(|_| ())
            }
            Err(status) => Err(status),
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        request
    }
}
